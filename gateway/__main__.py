"""`python -m gateway` is `tjg`."""

import sys

from gateway.cli.main import main

sys.exit(main())
