import sys

from tests.chaos.suite import main

sys.exit(main())
