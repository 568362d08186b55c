"""Ray is imported only by jobs that ask for it: its import and start-up cost seconds."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_and_in_process_runs_never_import_ray() -> None:
    code = (
        "import sys\n"
        "from simfarm.cli.app import app\n"
        "import simfarm.cli.annotate, simfarm.cli.evaluate, simfarm.cli.executor_options\n"
        "import simfarm.annotation, simfarm.execution, simfarm.execution.ray_executor\n"
        "from simfarm.cli.executor_options import RayOptions, executor_factory_for\n"
        "with executor_factory_for(RayOptions('local')) as (factory, rt):\n"
        "    assert factory is None and rt is None\n"
        "print('ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
