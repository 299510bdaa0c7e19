import sys

from rewardgym.cli import main

sys.exit(main())
