import sys

from multidigit.cli import main

sys.exit(main())
