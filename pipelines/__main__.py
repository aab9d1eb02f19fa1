"""`python -m pipelines` is `efp-migrate`."""

from pipelines.cli import main

main()
