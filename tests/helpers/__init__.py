"""What the tests share, by topic (the fixtures are in tests/conftest.py); import from the module:

- ``processes``: waiting for a condition, ports, processes found by command line and stopped, a CLI
  driver killed mid-run
- ``s3``: moto's S3 API server on 127.0.0.1, a distinctive secret key, datasets put in a bucket
- ``ray_nodes``: ``ray start`` heads and nodes on 127.0.0.1 (``RayNode``: temp folder, GCS, dashboard)
- ``ray_train``: the checkpoints Ray Train registered for a run in storage
- ``leaks``: the credential-leak search (files, buckets, Ray's and Ray Train's state)
- ``metadata``: a fake cloud instance metadata service (spot notices)
- ``events``: TensorBoard event files read back
- ``images``: small image folders, alone or mixed with files that are no images

No module keeps state: a server, node or secret is an object its fixture (or test) owns and passes on."""
