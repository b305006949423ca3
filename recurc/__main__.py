"""`python -m recurc` is the `recurc` command."""
import sys

from recurc.cli import main

sys.exit(main())
