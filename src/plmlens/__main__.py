"""``python -m plmlens`` (and ``torchrun -m plmlens``) runs the command line."""

from plmlens.cli import main

main()
