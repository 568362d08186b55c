"""``python -m simfarm.cli`` runs the command line (as ``python -m simfarm`` does)."""

from simfarm.cli.app import main

main()
