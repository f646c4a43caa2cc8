"""``python -m asyncflow``: see :mod:`asyncflow._cli`."""

import sys

from asyncflow._cli import main  # absolute: worker processes re-run this file by path

if __name__ == "__main__":
    sys.exit(main())
