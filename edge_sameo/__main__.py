import sys

from edge_sameo.cli import main

sys.exit(main())
