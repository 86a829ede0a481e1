"""Each Ray internal that cyclegan/distributed/ray_internals.py names is where it expects, and behaves as it
relies on: at a Ray upgrade this file fails first, naming what moved. The one test file that reads Ray's
private modules; no cluster is started."""
import asyncio
import importlib
import importlib.util
import io
import re
from pathlib import Path

import pytest

from cyclegan.distributed import ray_internals


def ray_module(name: str):
    """A Ray module the internals rely on, or a failure naming it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        pytest.fail(f"{name}: moved or removed in this Ray ({e}); update cyclegan/distributed/ray_internals.py")


def ray_source(name: str) -> str:
    """A Ray module's source, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        pytest.fail(f"{name}: moved or removed in this Ray; update cyclegan/distributed/ray_internals.py")
    return Path(spec.origin).read_text()


def test_the_autoscalers_default_scorer_and_its_launch_record():
    tracker = ray_module("ray.autoscaler._private.node_provider_availability_tracker")
    summary = tracker.NodeAvailabilitySummary({})
    score = ray_internals.default_utilization_scorer({"CPU": 4}, [{"CPU": 2}], "spot",
                                                     node_availability_summary=summary)
    assert isinstance(score, tuple), f"_default_utilization_scorer returned {score!r}, not a tuple"
    assert ray_internals.default_utilization_scorer({"CPU": 4}, [{"GPU": 1}], "spot",
                                                    node_availability_summary=summary) is None  # does not fit
    assert ray_internals.last_launch_worked(summary, "spot")  # nothing recorded
    refused = tracker.NodeAvailabilitySummary({"spot": tracker.NodeAvailabilityRecord(
        node_type="spot", is_available=False, last_checked_timestamp=0.0, unavailable_node_information=None)})
    assert not ray_internals.last_launch_worked(refused, "spot") and ray_internals.last_launch_worked(refused, "od")


def test_tunes_schedulers_use_only_the_controller_names_a_pairs_view_offers():
    """PBT, PB2, ASHA and FIFO are handed pair_search.PairTrials instead of Tune's controller: whatever they
    call on it must be in SCHEDULER_CONTROLLER_NAMES (a newer Ray's new call would fail mid-sweep)."""
    used = set()
    for name in ("trial_scheduler", "async_hyperband", "pbt", "pb2"):
        used |= set(re.findall(r"tune_controller\.(\w+)", ray_source(f"ray.tune.schedulers.{name}")))
    assert used <= ray_internals.SCHEDULER_CONTROLLER_NAMES, f"Tune's schedulers now also call {used - ray_internals.SCHEDULER_CONTROLLER_NAMES}"
    controller = ray_module("ray.tune.execution.tune_controller").TuneController
    missing = [n for n in ray_internals.SCHEDULER_CONTROLLER_NAMES if not hasattr(controller, n)]
    assert not missing, f"TuneController has no {missing}"


def test_a_populations_state_of_each_trial():
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import PopulationBasedTraining

    from cyclegan.distributed.pair_search import POPULATION_CLOCK

    class Controller:
        search_alg = None
    scheduler = PopulationBasedTraining(time_attr="epochs", metric="l1", mode="min",
                                        hyperparam_mutations={"lr": [1e-4, 1e-3]})
    trial = Trial("run_trial", config={"lr": 1e-4}, trial_id="t0", stub=True)
    scheduler.on_trial_add(Controller(), trial)
    states = ray_internals.population_trial_states(scheduler)
    assert list(states) == [trial], "PopulationBasedTraining._trial_state is not its per-trial state by Trial"
    missing = [name for name in POPULATION_CLOCK if not hasattr(states[trial], name)]
    assert not missing, f"PBT's trial state has no {missing}"


def test_where_tune_keeps_a_trials_files(tmp_path):
    import pyarrow.fs
    from ray.tune.experiment import Trial
    storage = ray_module("ray.train._internal.storage").StorageContext(
        storage_path=str(tmp_path), experiment_dir_name="sweep", trial_dir_name="seasons_t0")
    trial = Trial("run_trial", config={}, trial_id="t0", stub=True, storage=storage)
    filesystem, folder = ray_internals.trial_storage(trial)
    assert isinstance(filesystem, pyarrow.fs.FileSystem)
    assert folder == f"{tmp_path}/sweep/seasons_t0" == trial.path


def test_the_variables_tune_copies_into_trial_actors_are_left_out_and_put_back(monkeypatch):
    """Tune reads its list each time it registers a trainable's actor class: a name left out is not in that
    class's runtime environment."""
    class_cache = ray_module("ray.tune.execution.class_cache")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "driver-only")

    def env_of_a_new_trainable() -> dict:
        class Trainable:
            pass
        remote = class_cache._ActorClassCache().get(Trainable)
        return remote._default_options["runtime_env"]["env_vars"]
    assert "AWS_SESSION_TOKEN" in ray_internals.tune_propagated_names()
    assert env_of_a_new_trainable()["AWS_SESSION_TOKEN"] == "driver-only"
    with ray_internals.tune_propagating_none_of(lambda name: name.startswith("AWS_")) as left_out:
        assert "AWS_SESSION_TOKEN" in left_out and not ray_internals.tune_propagated_names() & left_out
        assert "AWS_SESSION_TOKEN" not in env_of_a_new_trainable()
    assert left_out <= ray_internals.tune_propagated_names()  # put back


def test_train_carries_its_health_check_variable_to_its_controller(monkeypatch):
    constants = ray_module("ray.train.v2._internal.constants")
    assert constants.HEALTH_CHECK_INTERVAL_S_ENV_VAR == ray_internals.TRAIN_HEALTH_CHECK_VARIABLE
    assert ray_internals.TRAIN_HEALTH_CHECK_VARIABLE in constants.ENV_VARS_TO_PROPAGATE
    monkeypatch.setenv(ray_internals.TRAIN_HEALTH_CHECK_VARIABLE, "0.7")
    assert ray_internals.train_propagated_variables()[ray_internals.TRAIN_HEALTH_CHECK_VARIABLE] == "0.7"


def test_train_configures_the_data_on_the_first_workers_shard_request_only():
    """ingest.RemainingSamples relies on it: the first worker writes where its group starts, then asks for
    its shard, and only then is DataConfig.configure called (once, for every worker)."""
    import ray.data
    import ray.train
    manager = ray_module(ray_internals.DATA_CONFIGURE_CALLER)
    metadata = ray_module("ray.train.v2._internal.data_integration.interfaces").DatasetShardMetadata
    sources = [p for p in Path(ray.train.__file__).parent.joinpath("v2").rglob("*.py")
               if re.search(r"data_config\.configure\(", p.read_text())]
    assert [p.stem for p in sources] == ["dataset_manager"], f"DataConfig.configure is also called in {sources}"
    calls = []

    class Recording(ray.train.DataConfig):
        def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
            calls.append((sorted(datasets), world_size))
            return [{name: f"shard {rank}" for name in datasets} for rank in range(world_size)]
    shards = manager.DatasetManager(datasets={"pairs": object()}, data_config=Recording(),
                                    data_context=ray.data.DataContext.get_current(), world_size=2,
                                    worker_node_ids=["a", "b"])
    assert calls == [], "Ray Train configured the data before any worker asked for its shard"

    async def ask(rank):
        return await shards.get_dataset_shard(metadata(dataset_name="pairs", world_rank=rank))
    assert asyncio.run(ask(0)) == "shard 0" and calls == [(["pairs"], 2)]
    assert asyncio.run(ask(1)) == "shard 1" and len(calls) == 1


def test_the_log_lines_bench_restart_reads_are_rays():
    worker = ray_module("ray._private.worker")
    out = io.StringIO()
    for ip in ("10.0.0.1", "10.0.0.9"):  # the driver's node, another
        worker.print_worker_logs({"pid": 12, "ip": ip, "localhost": "10.0.0.1", "actor_name": "RayTrainWorker",
                                  "lines": ["hello"]}, out)
    here, there = (ray_internals.TRAIN_WORKER_PREFIX.search(line) for line in out.getvalue().splitlines())
    assert here and here.groups() == ("12", None), out.getvalue()
    assert there and there.groups() == ("12", "10.0.0.9"), out.getvalue()
    assert "class RayTrainWorker" in ray_source("ray.train.v2._internal.execution.worker_group.worker")
    assert ray_internals.TRAIN_CHECKPOINT_LINE in ray_source("ray.train.v2._internal.execution.storage")
    assert ray_internals.TRAIN_PROCESS_GROUP_LINE in ray_source("ray.train.torch.config")


def test_what_the_tests_ask_of_ray(tmp_path):
    assert ray_internals.cpus_ray_detects() >= 1
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "kept.py").write_text("")
    (tmp_path / "project" / "runs").mkdir()
    (tmp_path / "project" / "runs" / "big.bin").write_bytes(b"0" * 10)
    (tmp_path / "project" / ".gitignore").write_text("runs/\n")
    limit = ray_internals.package_working_dir(str(tmp_path / "project"), tmp_path / "package.zip")
    import zipfile
    with zipfile.ZipFile(tmp_path / "package.zip") as z:
        packed = {info.filename for info in z.infolist() if not info.is_dir()}
    assert "kept.py" in packed and not any(name.startswith("runs") for name in packed), packed
    assert limit > 1 << 20


def test_the_autoscaler_code_the_cluster_tests_drive_is_there():
    """tests/helpers/ray_autoscaler.py: Ray's autoscaler functions that the cluster-file tests call."""
    from tests.helpers import ray_autoscaler
    for module, names in ray_autoscaler.NAMES.items():
        found = ray_module(module)
        missing = [n for n in names if not hasattr(found, n)]
        assert not missing, f"{module}: {missing} moved or removed in this Ray; update tests/helpers/ray_autoscaler.py"
