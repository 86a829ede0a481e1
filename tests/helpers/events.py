"""TensorBoard event files read back: the scalars, images and HParams a run or trial wrote."""
from __future__ import annotations

from pathlib import Path


def read_events(folder: Path) -> dict:
    """Scalars, images and HParams summaries of every event file in a (trial) folder."""
    import glob

    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    found: dict = {"scalars": set(), "images": set(), "hparams": set(), "hparam_values": {}}
    for path in glob.glob(str(folder / "events.out.tfevents.*")):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                if plugin == "hparams":
                    found["hparams"].add(value.tag)
                    if value.tag == "_hparams_/session_start_info":
                        from tensorboard.plugins.hparams import plugin_data_pb2
                        data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                        found["hparam_values"] = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                                                  for k, v in data.session_start_info.hparams.items()}
                elif plugin == "images" or value.HasField("image"):
                    found["images"].add(value.tag)
                elif plugin == "scalars" or value.HasField("simple_value"):
                    found["scalars"].add(value.tag)
    return found
