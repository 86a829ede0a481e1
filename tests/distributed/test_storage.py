"""Object storage in any region, on the loopback S3 server: with no region given, a bucket is used in its
own region (as S3 reports it), else the AWS config's, else us-east-1; a given region always wins."""
import http.server
import threading

import pytest

from cyclegan.core import storage
from cyclegan.core.storage import Storage


@pytest.fixture
def no_region(monkeypatch, tmp_path):
    """No region in the variables (an instance role gives none) and an AWS config naming eu-central-1."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = eu-central-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    storage.with_region.cache_clear()
    yield config
    storage.with_region.cache_clear()


@pytest.fixture
def regionless_store():
    """An HTTP server on 127.0.0.1 that answers every request 404 without saying a region (an
    S3-compatible store that keeps regions to itself)."""
    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_with_no_region_a_bucket_is_used_in_its_own_region(s3, s3_server, no_region, regionless_store):
    import botocore.session
    client = botocore.session.get_session().create_client("s3", endpoint_url=s3_server, region_name="us-west-2")
    client.create_bucket(Bucket="west-bucket", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    store = Storage.from_options()
    assert "region" not in dict(store.settings)  # nothing given: resolved where the bucket is used
    fs, _ = store.resolve("s3://west-bucket/runs/a")
    assert fs.region == "us-west-2"
    store.write_text("s3://west-bucket/runs/a/note.txt", "hello")
    assert store.read_text("s3://west-bucket/runs/a/note.txt") == "hello"
    tag = store.write_if("s3://west-bucket/runs/a/_writer.json", b"{}", None)  # s3fs in the same region
    assert store.read_tagged("s3://west-bucket/runs/a/_writer.json")[1] == tag
    assert Storage.from_options({"region": "ap-south-1"}).resolve("s3://west-bucket/x")[0].region == "ap-south-1"
    # A store that does not say: the AWS config's region, and us-east-1 without one.
    quiet = Storage.from_options({"endpoint_url": regionless_store})
    assert quiet.resolve("s3://any-bucket/x")[0].region == "eu-central-1"
    no_region.write_text("[default]\n")
    storage.with_region.cache_clear()
    assert quiet.resolve("s3://other-bucket/x")[0].region == "us-east-1"


@pytest.mark.parametrize("options, message", [
    ({"secret_key": "s3cr3t-value"}, r"storage_options\.secret_key: credentials never go in an experiment file"),
    ({"endpoint": "http://x"}, r"storage_options\.endpoint: unknown \(did you mean 'endpoint_url'\?\)"),
    ({"AKIA/EXAMPLE+KEY": "x"}, r"storage_options: unknown$"),
    ({"region": 3}, r"storage_options\.region: 3 must be a non-empty string"),
    ("http://x", r"storage_options: a mapping of endpoint_url and region is needed, not a str"),
])
def test_an_experiments_storage_options_say_where_the_store_is_and_nothing_secret(tmp_path, options, message):
    from cyclegan.core.config import ConfigError
    from cyclegan.core.experiment import parse_experiment

    from tests.distributed.test_sweep import experiment
    with pytest.raises(ConfigError, match=message) as caught:
        parse_experiment(experiment(tmp_path, storage_options=options))
    assert "s3cr3t" not in str(caught.value) and "AKIA" not in str(caught.value)
