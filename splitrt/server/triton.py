"""Serving the tails on NVIDIA Triton Inference Server (Python backend).

``splitrt export triton`` writes a model repository: one model per served
model, whose ``model.py`` hands every request to :class:`TritonTailModel`
(decode our bitstream, any codec and width, check it, run the tail) and a
``config.pbtxt``.  The wire is the same KServe v2 protocol, so
``splitrt-edge`` talks to Triton unchanged.

The Python backend's stub embeds an interpreter: it needs the running
interpreter's ``libpython`` first on ``LD_LIBRARY_PATH``
(``triton_environment``), and ignores ``PYTHONPATH``, so each ``model.py``
names the exporting environment's package folders itself.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from ..models.spec import ModelSpec

#: Output tensors per task, as config.pbtxt declares them (after the batch dimension).
OUTPUTS = {
    "detection": [("boxes", "TYPE_FP32", [-1, 4]), ("scores", "TYPE_FP32", [-1]), ("labels", "TYPE_INT64", [-1])],
    "classification": [("logits", "TYPE_FP32", [-1])],
}

MODEL_PY = '''"""Triton Python-backend model written by `splitrt export triton`: the splitrt tail."""

import sys

# The backend stub embeds its own interpreter and ignores PYTHONPATH: find splitrt, torch and
# friends where the environment that exported this repository has them.
for _path in reversed({paths!r}):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from splitrt.server.triton import TritonTailModel as TritonPythonModel  # noqa: E402, F401
'''


def config_pbtxt(spec: ModelSpec, task: str, instances: int = 1, max_batch: int = 16, delay_us: int = 5000) -> str:
    outputs = ",\n".join(
        f'  {{ name: "{name}" data_type: {dtype} dims: [ {", ".join(str(d) for d in dims)} ] }}'
        for name, dtype, dims in OUTPUTS[task]
    )
    params = {
        "splitrt_arch": spec.arch,
        "splitrt_weights": str(spec.weights or ""),
        "splitrt_options": json.dumps(spec.options),
    }
    parameters = "\n".join(
        f'parameters {{ key: "{k}" value: {{ string_value: {json.dumps(v)} }} }}' for k, v in params.items()
    )
    return f"""name: "{spec.name}"
backend: "python"
# One request per frame: its payload is a [1, N] byte string, as splitrt-edge sends it.  Payloads
# differ in length, so they are batched ragged: Triton's dynamic batcher hands the model up to
# max_batch_size requests from any clients at once, and the model runs their tails as one batch.
max_batch_size: {max_batch}
input [
  {{ name: "PAYLOAD" data_type: TYPE_UINT8 dims: [ -1 ] allow_ragged_batch: true }}
]
output [
{outputs}
]
dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}
instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
{parameters}
"""


def write_repository(
    specs: list[ModelSpec], out: str | Path, instances: int = 1, max_batch: int = 16, delay_us: int = 5000
) -> Path:
    """A Triton model repository serving the tails of ``specs``."""
    out = Path(out)
    for spec in specs:
        task = spec.build().task
        if task not in OUTPUTS:
            raise ValueError(f"model {spec.name!r}: no Triton outputs defined for task {task!r}")
        folder = out / spec.name / "1"
        folder.mkdir(parents=True, exist_ok=True)
        paths = [p for p in sys.path if p and Path(p).is_dir() and "site-packages" in p]
        paths.append(str(Path(__file__).resolve().parents[2]))  # this checkout (editable installs)
        (folder / "model.py").write_text(MODEL_PY.format(paths=paths))
        (out / spec.name / "config.pbtxt").write_text(config_pbtxt(spec, task, instances, max_batch, delay_us))
    return out


class TritonTailModel:
    """The Python-backend model class (Triton looks it up as ``TritonPythonModel``)."""

    def initialize(self, args: dict[str, str]) -> None:
        from .repository import ServedModel

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        spec = ModelSpec(
            config["name"],
            params["splitrt_arch"],
            weights=params.get("splitrt_weights") or None,
            options=json.loads(params.get("splitrt_options") or "{}"),
        )
        self.served = ServedModel(spec, "cpu")
        self.outputs = [name for name, _, _ in OUTPUTS[self.served.model.task]]

    def execute(self, requests: list[Any]) -> list[Any]:
        """Decode every request, run the tails of those at one split point as one batch, answer each."""
        import triton_python_backend_utils as pb_utils

        from ..wire.protocol import PROBE, frame_from_params

        answers: list[Any] = [None] * len(requests)
        by_split: dict[str, list[tuple[int, Any, Any]]] = {}
        for index, request in enumerate(requests):
            try:
                payload = pb_utils.get_input_tensor_by_name(request, "PAYLOAD").as_numpy().tobytes()
                params = json.loads(request.parameters() or "{}")
                if params.get(PROBE) is True:  # an edge measuring its uplink: answer at once, run nothing
                    answers[index] = self._empty(pb_utils)
                    continue
                frame = frame_from_params(self.served.name, request.request_id(), payload, params)
                features, meta = self.served.decode(frame)
                by_split.setdefault(frame.split, []).append((index, features, meta))
            except Exception as exc:  # this frame is refused with its reason; the others go on
                answers[index] = self._error(pb_utils, request, exc)
        for split, items in by_split.items():
            try:
                results, _, _ = self.served.tail_batch([(f, m) for _, f, m in items], split)
            except Exception as exc:
                for index, _, _ in items:
                    answers[index] = self._error(pb_utils, requests[index], exc)
                continue
            for (index, _, _), outputs in zip(items, results):
                tensors = [pb_utils.Tensor(name, outputs[name].numpy()[None]) for name in self.outputs]
                answers[index] = pb_utils.InferenceResponse(output_tensors=tensors)
        return answers

    def _empty(self, pb_utils: Any) -> Any:
        import numpy as np

        dtypes = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64}
        shapes = {"boxes": (1, 0, 4), "scores": (1, 0), "labels": (1, 0), "logits": (1, 0)}
        task_outputs = OUTPUTS[self.served.model.task]
        tensors = [pb_utils.Tensor(n, np.zeros(shapes[n], dtype=dtypes[t])) for n, t, _ in task_outputs]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    @staticmethod
    def _error(pb_utils: Any, request: Any, exc: Exception) -> Any:
        message = f"frame {request.request_id()!r}: {type(exc).__name__}: {exc}"
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))

    def finalize(self) -> None:
        self.served.close()


# -- running tritonserver from the nvidia-pytriton wheel -------------------------------------------------
def find_tritonserver(site_packages: str | Path | None = None) -> Path | None:
    """The pytriton package folder holding ``tritonserver/bin/tritonserver``, if installed somewhere known."""
    candidates = [Path(site_packages)] if site_packages else []
    candidates += [Path(p) for p in sys.path if p.endswith("site-packages")]
    for base in candidates:
        binary = base / "pytriton" / "tritonserver" / "bin" / "tritonserver"
        if binary.is_file():
            return base
    return None


def backend_directory(site_packages: Path, out: Path) -> Path:
    """Triton's backend folder: the Python backend with the stub built for this interpreter's version."""
    source = site_packages / "pytriton" / "tritonserver"
    python = out / "python"
    python.mkdir(parents=True, exist_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise FileNotFoundError(f"no Python backend stub for Python {version} in {source}")
    for item in (source / "backends" / "python").iterdir():
        if item.is_file():
            shutil.copy(item, python / item.name)
    shutil.copy(stub, python / "triton_python_backend_stub")
    (python / "triton_python_backend_stub").chmod(0o755)
    return out


def triton_environment(site_packages: Path) -> dict[str, str]:
    """Environment for tritonserver: its bundled libraries, this interpreter's libpython, this env's packages."""
    libs = [str(site_packages / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, env.get("LD_LIBRARY_PATH", "")])
    return env


def tritonserver_command(site_packages: Path, repository: Path, backends: Path, grpc_port: int) -> list[str]:
    binary = site_packages / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    return [
        str(binary),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        f"--grpc-port={grpc_port}",
        "--allow-http=false",
        "--allow-metrics=false",
        "--log-verbose=0",
    ]
