"""`python -m echoflow`: the same command as `echoflow`."""

from echoflow.cli import main

main()
