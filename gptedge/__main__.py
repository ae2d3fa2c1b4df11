import sys

from gptedge.cli import main

sys.exit(main())
