"""The ``cyclegan`` subcommands, one module each (``bench`` and ``report`` are packages, one module per
part). Each module builds its own parser (``add_parser``) and runs (``run``, set as the parser's default);
``cli.py`` imports only the one asked for, so that a command starts without the others' imports."""

COMMANDS = {  # name: the line `cyclegan --help` shows for it
    'train': 'train a CycleGAN (reference train.py flags)',
    'test': 'translate test images into results/<name>/<phase>_<epoch>/ (test.py flags)',
    'translate': 'translate every image of a folder or s3:// prefix with a trained generator (Ray Data with --num_workers N)',
    'export': "a run's, a sweep report's or a published file's generators as ONNX and TorchScript, each checked against PyTorch (pip install 'cyclegan[export]')",
    'eval': 'score a run: L1/PSNR to the ideal translation (built-in pairs) or FID/KID',
    'sweep': 'hyperparameter search with Ray Tune + Optuna over one or more domain pairs',
    'report': "HTML page and table of a sweep's best trials; exports each pair's best",
    'bench': 'seconds per training iteration on random tensors, and other figures',
    'data': 'datasets: built-in pairs, published datasets, uploads',
    'cluster': 'node-side helpers for Ray clusters',
}
