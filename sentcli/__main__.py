"""`python -m sentcli` (and `torchrun -m sentcli`)."""

from sentcli.cli import main

main()
