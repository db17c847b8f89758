"""Django's command line for the example project."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # The example's modules are named from the repository's root: run from anywhere.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if root not in sys.path:
        sys.path.insert(0, root)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_project.proj.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
