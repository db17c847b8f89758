import sys

from tests.compat.suite import main

sys.exit(main())
