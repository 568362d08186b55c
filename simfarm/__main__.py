"""``python -m simfarm`` runs the command line."""

from simfarm.cli import main

main()
