"""Issue 26's rows (hardening, second round), one CLI-level test each: real files, the exit
code and the one error line asserted, the files around hashed before and after (a refusal
writes and changes nothing). Links and paths out of an `hf:` folder, `--out` on the
command's own input, lineage records that lie, and no network beyond loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from llm_models import tiny, word_tokenizer
from safetensors.torch import load_file, save_file
from test_hardening import REPO, hashes, one_line

TEXT = ("the word of the day is what you can use . he said it was for all of us , " * 20).strip()


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    """A good tiny Llama folder (weights, tokenizer); copy it before changing it."""
    folder = tmp_path_factory.mktemp("llama") / "good"
    tiny("llama").save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def text(tmp_path) -> Path:
    path = tmp_path / "text.txt"
    path.write_text(TEXT)
    return path


def _prune_hf(folder: Path, text: Path, out: Path) -> list:
    return ["prune", "--model", f"hf:{folder}", "--target-params", 0.9, "--calibration", f"text:{text}",
            "--calibration-samples", 2, "--length", 8, "--latency-repeats", 1, "--out", out]  # fmt: skip


# --- links and paths out of an hf: folder --------------------------------------------------


def _linked(llama: Path, root: Path, case: str) -> tuple[Path, Path]:
    """A copy of `llama` under `root` whose `case` file leads outside it; returns (folder,
    the path the error must name)."""
    folder = root / "model"
    shutil.copytree(llama, folder)
    secret = root / "secret"
    secret.mkdir()
    if case == "preprocessor_config":
        (secret / "outside.json").write_text('{"secret": "SECRET-CONTENT"}')
        (folder / "preprocessor_config.json").symlink_to(secret / "outside.json")
        return folder, folder / "preprocessor_config.json"
    if case == "chat_template":
        (secret / "outside.jinja").write_text("SECRET-CONTENT")
        (folder / "chat_template.jinja").symlink_to(secret / "outside.jinja")
        return folder, folder / "chat_template.jinja"
    if case == "weights_symlink":
        shutil.move(folder / "model.safetensors", secret / "model.safetensors")
        (folder / "model.safetensors").symlink_to(secret / "model.safetensors")
        return folder, folder / "model.safetensors"
    # a shard index naming ../secret/model.safetensors
    shutil.move(folder / "model.safetensors", secret / "model.safetensors")
    names = load_file(secret / "model.safetensors")
    index = {"metadata": {}, "weight_map": {name: "../secret/model.safetensors" for name in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder, folder / "../secret/model.safetensors"


@pytest.mark.parametrize("case", ["preprocessor_config", "chat_template", "weights_symlink", "shard_index"])
def test_a_link_or_path_out_of_an_hf_folder_is_refused(cli, tmp_path, llama, text, case):
    folder, named = _linked(llama, tmp_path, case)
    out = tmp_path / "out"
    before = hashes(tmp_path)
    result = cli(*_prune_hf(folder, text, out))
    assert result.returncode == 2, result.stderr
    one_line(result, "error: ", str(named), "outside the model folder", "refused")
    assert hashes(tmp_path) == before and not out.exists()


def test_a_link_inside_an_hf_folder_is_copied_as_its_target(cli, tmp_path, llama, text):
    folder = tmp_path / "model"
    shutil.copytree(llama, folder)
    (folder / "template.jinja").write_text("{{ messages }}")
    (folder / "chat_template.jinja").symlink_to(folder / "template.jinja")
    out = tmp_path / "out"
    result = cli(*_prune_hf(folder, text, out))
    assert result.returncode == 0, result.stderr
    copied = out / "chat_template.jinja"
    assert not copied.is_symlink() and copied.read_text() == "{{ messages }}"


# --- --out on the command's own input ------------------------------------------------------


@pytest.mark.parametrize("where", ["source", "inside", "holding"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["", "overwrite"])
def test_hf_out_on_its_own_source_is_refused(cli, tmp_path, llama, text, where, overwrite):
    folder = tmp_path / "models" / "model"
    shutil.copytree(llama, folder)
    out = {"source": folder, "inside": folder / "pruned", "holding": tmp_path / "models"}[where]
    before = hashes(tmp_path)
    result = cli(*_prune_hf(folder, text, out), *(["--overwrite"] if overwrite else []))
    assert result.returncode == 2, result.stderr
    one_line(result, f"--out {out}", "the input", "would destroy that input")
    assert hashes(tmp_path) == before


ZOO_COMMANDS = {
    "prune": ["prune", "--calibration", "gaussian", "--calibration-samples", "16"],
    "unlearn": ["unlearn", "--forget-class", "3", "--method", "ft"],
    "finetune": ["finetune", "--data", "real", "--epochs", "1"],
    "synthesize": ["synthesize", "--method", "gaussian", "--per-class", "2"],
}


@pytest.mark.parametrize("name", ZOO_COMMANDS)
@pytest.mark.parametrize("link", [False, True], ids=["", "through-a-link"])
def test_zoo_out_on_its_own_checkpoint_is_refused_even_with_overwrite(
    cli, tmp_path, tiny_digits_checkpoint, name, link
):
    model = tmp_path / "model.pt"
    shutil.copy(tiny_digits_checkpoint, model)
    out = model
    if link:
        out = tmp_path / "alias.pt"
        out.symlink_to(model)
    before = hashes(tmp_path)
    result = cli(*ZOO_COMMANDS[name], "--model", model, "--out", out, "--overwrite")
    assert result.returncode == 2, result.stderr
    one_line(result, f"--out {out} is the input {model}")
    assert hashes(tmp_path) == before


def test_finetune_out_on_its_teacher_is_refused(cli, tmp_path, tiny_digits_checkpoint):
    model, teacher = tmp_path / "model.pt", tmp_path / "teacher.pt"
    shutil.copy(tiny_digits_checkpoint, model)
    shutil.copy(tiny_digits_checkpoint, teacher)
    before = hashes(tmp_path)
    result = cli(*ZOO_COMMANDS["finetune"], "--model", model, "--teacher", teacher, "--out", teacher, "--overwrite")
    assert result.returncode == 2
    one_line(result, f"--out {teacher} is the input {teacher}")
    assert hashes(tmp_path) == before


NET = """
from torch import nn


def build():
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)]
    return nn.Sequential(*layers)
"""


@pytest.mark.parametrize("where", ["weights", "holding"])
def test_python_kind_out_on_its_weights_is_refused(cli, tmp_path, monkeypatch, where):
    """The `python:` kind keeps the same discipline: its `--weights` are an input model."""
    import torch

    (tmp_path / "usernets").mkdir()
    (tmp_path / "usernets" / "netr2.py").write_text(NET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "w").mkdir()
    weights = tmp_path / "w" / "net.safetensors"
    torch.manual_seed(0)
    state = {"0.weight": torch.randn(8, 3, 3, 3), "0.bias": torch.zeros(8), "4.weight": torch.randn(10, 8)}
    save_file(state | {"4.bias": torch.zeros(10)}, str(weights))
    out = {"weights": weights, "holding": tmp_path / "w"}[where]
    before = hashes(tmp_path)
    result = cli("prune", "--model", "python:usernets.netr2:build", "--weights", weights, "--input-shape", "3,8,8",
                 "--out", out, "--overwrite")  # fmt: skip
    assert result.returncode == 2, result.stderr
    one_line(result, f"--out {out}", f"the input {weights}")
    assert hashes(tmp_path) == before


# --- no network beyond loopback --------------------------------------------------------------

# Installed (as sitecustomize) in every Python process of a command: each socket connect and
# name lookup, and each process started, is appended to NET_TRACE. A child started with an
# environment of its own (DVC's daemon sets PYTHONPATH) gets the tracer back in its path.
TRACER = """
import os, sys
_LOG, _SITE = os.environ["NET_TRACE"], os.path.dirname(os.path.abspath(__file__))
def _note(line):
    with open(_LOG, "a") as handle:
        handle.write(line + "\\n")
def _hook(event, args):
    if event == "socket.connect":
        _note(f"connect {args[1]!r}")
    elif event == "socket.getaddrinfo":
        _note(f"lookup {args[0]!r}")
    elif event == "subprocess.Popen":
        _note(f"process {list(args[1]) if isinstance(args[1], (list, tuple)) else args[1]!r}")
        env = args[3]
        if isinstance(env, dict) and _SITE not in env.get("PYTHONPATH", ""):
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [_SITE, env.get("PYTHONPATH")]))
            env["NET_TRACE"] = _LOG
sys.addaudithook(_hook)
"""
LOOPBACK = ("127.", "'::1'", "'localhost'", "None", "''")


def traced_env(tmp_path: Path) -> tuple[dict, Path]:
    """The tests' isolated environment less every opt-out of telemetry (modhifi must set
    them itself), with the tracer on PYTHONPATH; and the trace file."""
    from pipeline_workspace import isolated_env

    site = tmp_path / "tracer"
    site.mkdir()
    (site / "sitecustomize.py").write_text(TRACER)
    trace = tmp_path / "net-trace.txt"
    trace.write_text("")
    env = isolated_env(tmp_path / "home")
    for key in ("DVC_NO_ANALYTICS", "DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY", "PREFECT_SERVER_ANALYTICS_ENABLED"):
        env.pop(key, None)
    env |= {"NET_TRACE": str(trace), "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    return env, trace


def beyond_loopback(trace: Path) -> list[str]:
    """The traced connections and lookups of a non-loopback address, and any analytics
    daemon started (it would connect once detached, after the command returned)."""
    bad = []
    for line in trace.read_text().splitlines():
        what, _, address = line.partition(" ")
        if what == "process":
            bad += [line] if "daemon" in address and "analytics" in address else []
        elif what == "connect" and not (address.startswith("'/") or address.startswith("b'")):
            # an AF_INET(6) tuple: its host must be loopback
            host = address.strip("()").split(",")[0].strip()
            bad += [] if host.strip("'").startswith("127.") or host in ("'::1'", "'localhost'") else [line]
        elif what == "lookup" and address not in ("'localhost'", "None", "''", "'::1'") and "127." not in address:
            bad.append(line)
    return bad


def test_tracer_sees_a_connection_beyond_loopback(tmp_path):
    """The check itself can fail: a lookup and a connect to a public address are recorded."""
    env, trace = traced_env(tmp_path)
    code = (
        "import socket\ntry:\n    socket.create_connection(('192.0.2.1', 9), timeout=0.01)\nexcept OSError:\n    pass"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert beyond_loopback(trace) == ["lookup '192.0.2.1'", "connect ('192.0.2.1', 9)"]


def test_prune_of_an_hf_folder_connects_nowhere(tmp_path, llama, text):
    env, trace = traced_env(tmp_path)
    args = [str(a) for a in _prune_hf(llama, text, tmp_path / "out")]
    done = subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert beyond_loopback(trace) == []


@pytest.mark.slow
def test_modhifi_run_connects_nowhere_beyond_loopback(tmp_path, llama):
    """A whole `modhifi run` (Prefect's temporary server, DVC, every stage, MLflow) of a
    language model from an `hf:` folder, with no telemetry opt-out in the environment."""
    from llm_models import word_text
    from pipeline_workspace import language_params, make_workspace, write_params

    from kinds.language import CausalLMKind

    root = make_workspace(tmp_path / "ws", CausalLMKind)
    write_params(root, language_params(llama, word_text(tmp_path / "held-out.txt", 400, 2)))
    env, trace = traced_env(tmp_path)
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--workspace", str(root), "--quiet"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "connect ('127.0.0.1'" in trace.read_text()  # the tracer ran: the client reached Prefect's server
    assert beyond_loopback(trace) == []


# --- lineage records that lie ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pruned_tree(tmp_path_factory, llama) -> Path:
    """`root/models/llama` and `root/pruned`, its `modhifi prune` output (copy before changing)."""
    from flows.cli import main

    root = tmp_path_factory.mktemp("lineage")
    shutil.copytree(llama, root / "models" / "llama")
    (root / "text.txt").write_text(TEXT)
    main([str(a) for a in _prune_hf(root / "models" / "llama", root / "text.txt", root / "pruned")])  # exits on failure
    assert (root / "pruned" / "modhifi.json").is_file()
    return root


@pytest.fixture
def tree(tmp_path, pruned_tree) -> Path:
    shutil.copytree(pruned_tree, tmp_path / "tree")
    return tmp_path / "tree"


def _edit_record(folder: Path, edit) -> None:
    record = json.loads((folder / "modhifi.json").read_text())
    edit(record)
    (folder / "modhifi.json").write_text(json.dumps(record))


def _verify_json(cli, folder: Path):
    result = cli("lineage", folder, "--verify", "--format", "json")
    return result, json.loads(result.stdout.strip().splitlines()[-1])


def test_lineage_verify_checks_a_cli_written_folders_nested_parent(cli, tree):
    intact, record = _verify_json(cli, tree / "pruned")
    assert intact.returncode == 3  # no dvc.lock: unverifiable, but the parent is found by its hash
    source = (tree / "models" / "llama" / "model.safetensors").resolve()
    assert {"role": "model model.safetensors", "parent": str(source)}.items() <= record["chain"][-1].items()
    forged = "0" * 64
    _edit_record(tree / "pruned", lambda r: r["parents"]["model"].update({"model.safetensors": forged}))
    before = hashes(tree)
    result, record = _verify_json(cli, tree / "pruned")
    assert result.returncode == 3
    said = f"cannot verify {(tree / 'pruned').resolve()}'s model model.safetensors (sha256 {forged})"
    assert any(line.startswith(said) for line in record["unverifiable"]), record["unverifiable"]
    assert hashes(tree) == before


def test_lineage_verify_skips_a_folder_named_like_a_checkpoint(cli, tree):
    (tree / "junk.pt").mkdir()
    (tree / "junk.pt" / "file").write_text("x")
    result, record = _verify_json(cli, tree / "pruned")
    assert result.returncode == 3, result.stderr
    one_line(result, "error: lineage verification failed")
    assert record["chain"][-1]["role"] == "model model.safetensors"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("parents", "abc", "key 'parents' must be an object, not a str"),
        ("weights", ["model.safetensors"], "key 'weights' must be an object, not a list"),
        ("weights", {"../../file": "0" * 64}, "key 'weights' entry '../../file' must be a file name in the folder"),
        ("parents", {"model": {"../x": "0" * 64}}, "key 'parents' entry 'model'"),
    ],
    ids=["parents-a-string", "weights-a-list", "weights-outside", "parents-outside"],
)
@pytest.mark.parametrize("verify", [False, True], ids=["", "verify"])
def test_a_malformed_lineage_record_is_one_line_naming_file_and_key(cli, tree, key, value, message, verify):
    (tree / "file").write_text("outside the folder")
    _edit_record(tree / "pruned", lambda r: r.update({key: value}))
    before = hashes(tree)
    result = cli("lineage", tree / "pruned", *(["--verify"] if verify else []))
    assert result.returncode == 2, result.stderr
    one_line(result, "error: ", str(tree / "pruned" / "modhifi.json"), message)
    assert "outside the folder" not in result.stdout and hashes(tree) == before


def test_an_outsized_lineage_record_is_refused_at_once(cli, tree):
    import time

    record = json.loads((tree / "pruned" / "modhifi.json").read_text())
    record["padding"] = "x" * (17 * 2**20)
    (tree / "pruned" / "modhifi.json").write_text(json.dumps(record))
    start = time.perf_counter()
    result = cli("lineage", tree / "pruned", "--verify")
    assert result.returncode == 2
    one_line(result, "error: ", "modhifi.json is 17 MiB, more than a lineage record holds")
    assert time.perf_counter() - start < 5


# --- usage errors, Ctrl-C, kill -9 -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prune", "--bogus", "1"], "No such option: --bogus"),
        (["prune"], "Missing option '--model'"),
        (["no-such-command"], "No such command 'no-such-command'"),
        (["train", "--epochs", "-1", "--out", "x.pt"], "Invalid value for '--epochs'"),
    ],
    ids=["unknown-option", "missing-option", "unknown-command", "bad-value"],
)
def test_a_usage_error_is_one_line_exit_2(cli, tmp_path, args, message):
    result = cli(*args)
    assert result.returncode == 2
    one_line(result, "error: ", message, "--help)")


@pytest.fixture(scope="module")
def lm_workspace(tmp_path_factory, llama):
    """A language-model workspace that ran once (its outputs in dvc.lock and DVC's cache)."""
    from llm_models import word_text
    from pipeline_workspace import isolated_env, language_params, make_workspace, run_pipeline, write_params

    from kinds.language import CausalLMKind

    base = tmp_path_factory.mktemp("interrupt")
    root = make_workspace(base / "ws", CausalLMKind)
    write_params(root, language_params(llama, word_text(base / "held-out.txt", 400, 2)))
    env = isolated_env(base / "home") | {"PYTHONPATH": str(REPO)}
    run_pipeline(root, env)
    return root, env


def _start(root: Path, env: dict, *args: str) -> subprocess.Popen:
    """`modhifi ARGS` in its own process group (a terminal's Ctrl-C reaches the whole group)."""
    command = [sys.executable, "-m", "flows.cli", *args, "--workspace", str(root)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    return subprocess.Popen(command, cwd=root, env=env, start_new_session=True, **pipes)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 600) -> None:
    import time

    start = time.monotonic()
    while not condition():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() - start < timeout
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_during_a_sweep_exits_130_with_params_and_outputs_restored(lm_workspace):
    import signal
    import time

    root, env = lm_workspace
    before = hashes(root / "outputs")
    params = (root / "params.yaml").read_bytes()
    lock = (root / "dvc.lock").read_bytes()
    pruned = root / "outputs" / "pruned" / "hf"
    sweep = _start(root, env, "sweep", "language.latency_repeats=2,3")
    _wait_for(lambda: not pruned.exists(), sweep)  # DVC removed prune's outputs: its stage runs
    time.sleep(1)
    os.killpg(sweep.pid, signal.SIGINT)
    start = time.monotonic()
    _, stderr = sweep.communicate(timeout=300)
    assert sweep.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == "error: interrupted"
    assert time.monotonic() - start < 45  # not Prefect's minute of retries to a dead server
    assert (root / "params.yaml").read_bytes() == params and (root / "dvc.lock").read_bytes() == lock
    assert hashes(root / "outputs") == before


def _prefect_servers(home: str) -> list[int]:
    """The pids of the Prefect servers whose PREFECT_HOME is `home`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"prefect.server.api.server:create_app" in command and f"PREFECT_HOME={home}".encode() in environ:
            found.append(int(proc.name))
    return found


@pytest.mark.slow
def test_the_temporary_prefect_server_dies_with_a_killed_run(lm_workspace):
    import signal
    import time

    root, env = lm_workspace
    run = _start(root, env, "run", "--force", "--quiet")
    _wait_for(lambda: _prefect_servers(env["PREFECT_HOME"]), run)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    start = time.monotonic()
    while _prefect_servers(env["PREFECT_HOME"]) and time.monotonic() - start < 30:
        time.sleep(0.2)
    assert _prefect_servers(env["PREFECT_HOME"]) == []
    os.killpg(run.pid, signal.SIGKILL)  # the run's DVC and stage processes, if still there


# --- options refused before any work ---------------------------------------------------------


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A folder holding a copy of the repository's params.yaml."""
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    return root


def test_a_sweep_key_given_twice_is_refused_before_anything_is_written(cli, workspace):
    before = hashes(workspace)
    result = cli("sweep", "prune.target_flops=0.3", "prune.target_flops=0.5", "--workspace", workspace)
    assert result.returncode == 2
    one_line(result, "error: sweep key prune.target_flops is given twice")
    assert hashes(workspace) == before and sorted(p.name for p in workspace.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize(
    ("api", "cron", "message"),
    [
        ("http://127.0.0.1:9/api", "not a cron", "schedule 'not a cron' is not a valid cron expression"),
        ("http://127.0.0.1:9/api", None, "PREFECT_API_URL http://127.0.0.1:9/api does not answer"),
    ],
    ids=["bad-cron", "unreachable-server"],
)
def test_serve_refuses_a_bad_schedule_or_an_unreachable_server(cli, workspace, monkeypatch, api, cron, message):
    import time

    monkeypatch.setenv("PREFECT_API_URL", api)
    before = hashes(workspace)
    start = time.perf_counter()
    result = cli("serve", "--workspace", workspace, *(["--cron", cron] if cron else []))
    assert result.returncode == 2
    one_line(result, "error: ", message)
    assert time.perf_counter() - start < 15 and hashes(workspace) == before


def test_a_5_class_checkpoint_is_not_pruned_on_10_class_data(cli, tmp_path):
    import torch

    from modhifi_core.checkpoint import save_checkpoint
    from modhifi_core.data import data_spec
    from modhifi_core.models import ModelConfig, build_model

    torch.manual_seed(0)
    config = ModelConfig(name="resnet18", num_classes=5, width=4, image_size=8, in_channels=1)
    model = tmp_path / "five.pt"
    save_checkpoint(model, build_model(config), config, metadata={"data": data_spec()})
    before = hashes(tmp_path)
    result = cli("prune", "--model", model, "--calibration", "gaussian", "--calibration-samples", 8,
                 "--out", tmp_path / "pruned.pt")  # fmt: skip
    assert result.returncode == 2
    one_line(result, "error: the model has 5 classes, the dataset 10")
    assert hashes(tmp_path) == before


def test_a_vit_given_an_image_size_it_cannot_take_is_one_line(cli, tmp_path):
    tiny("vit").save_pretrained(tmp_path / "vit")
    before = hashes(tmp_path)
    result = cli("evaluate", "--model", f"hf:{tmp_path / 'vit'}", "--image-size", 7, "--data", "digits")
    assert result.returncode == 2
    one_line(result, f"error: --image-size 7: {tmp_path / 'vit'} does not take 7x7 images")
    assert hashes(tmp_path) == before


def test_evaluate_refuses_windows_longer_than_the_models_positions(cli, tmp_path, text):
    tiny("gpt2").save_pretrained(tmp_path / "gpt2")  # 32 positions
    word_tokenizer().save_pretrained(tmp_path / "gpt2")
    before = hashes(tmp_path)
    result = cli("evaluate", "--model", f"hf:{tmp_path / 'gpt2'}", "--text", text, "--length", 1000, "--samples", 1)
    assert result.returncode == 2
    one_line(result, "error: length 1000 exceeds the model's 32 positions")
    assert hashes(tmp_path) == before


def test_a_model_folder_given_as_held_out_text_is_refused(cli, tmp_path, llama):
    before = hashes(llama)
    result = cli("evaluate", "--model", f"hf:{llama}", "--text", llama, "--length", 8, "--samples", 1)
    assert result.returncode == 2
    one_line(result, f"error: text source {llama} is a model folder (it holds model.safetensors), not text")
    assert hashes(llama) == before


def _empty(root: Path) -> Path:
    (root / "empty.txt").write_text("")
    return root / "empty.txt"


def _binary(root: Path) -> Path:
    (root / "blob.txt").write_bytes(bytes(range(128, 256)) * 4)
    return root / "blob.txt"


def _empty_folder(root: Path) -> Path:
    (root / "none").mkdir()
    return root / "none"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"eval_text": _empty}, "language.eval_text: text source"),
        ({"eval_text": _binary}, "holds no UTF-8 text"),
        ({"eval_text": _empty_folder}, "has no files"),
        ({"eval_text": lambda root: root.parent / "llama"}, "is a model folder"),
        ({"cluster": "garbage"}, "cluster.address must be null, 'local' or tcp://host:port, got 'garbage'"),
        ({"cluster": "tcp://127.0.0.1"}, "cluster.address must be null, 'local' or tcp://host:port"),
        ({"cluster": ""}, "cluster.address must be null, 'local' or tcp://host:port, got ''"),
    ],
    ids=["empty-text", "binary-text", "empty-folder", "model-folder", "garbage", "no-port", "empty-address"],
)
def test_bad_run_inputs_are_refused_at_run_start(cli, tmp_path, llama, change, message):
    """`modhifi run` refuses them before anything is written (dvc.yaml, DVC, Prefect, MLflow)."""
    from pipeline_workspace import language_params, write_params

    shutil.copytree(llama, tmp_path / "llama")
    root = tmp_path / "ws"
    root.mkdir()
    (root / "held-out.txt").write_text(TEXT)
    params = language_params(tmp_path / "llama", root / "held-out.txt")
    if "eval_text" in change:
        params["language"]["eval_text"] = str(change["eval_text"](root))
    else:
        params["cluster"]["address"] = change["cluster"]
    write_params(root, params)
    before = hashes(tmp_path)
    result = cli("run", "--workspace", root)
    assert result.returncode == 2, result.stderr[-2000:]
    one_line(result, "error: ", message)
    assert hashes(tmp_path) == before
    assert not any((root / name).exists() for name in ("dvc.yaml", ".dvc", "mlflow.db", ".prefect"))


# --- what a model file is not ----------------------------------------------------------------


class _Canary:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _raw_pickle(tmp_path: Path) -> Path:
    import pickle

    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps({"state_dict": _Canary(tmp_path / "CANARY")}, protocol=4))
    return path


def _fifo(tmp_path: Path) -> Path:
    os.mkfifo(tmp_path / "fifo.pt")
    return tmp_path / "fifo.pt"


def _zeros(tmp_path: Path) -> Path:
    (tmp_path / "zeros.pt").write_bytes(bytes(1 << 16))
    return tmp_path / "zeros.pt"


def _device(tmp_path: Path) -> Path:
    (tmp_path / "dev.pt").symlink_to("/dev/zero")
    return tmp_path / "dev.pt"


def test_a_raw_hostile_pickle_is_modhifis_one_line_only(tmp_path):
    """In a child process: torch's own warnings would go to the real stderr."""
    path = _raw_pickle(tmp_path)
    command = [sys.executable, "-m", "flows.cli", "evaluate", "--model", str(path)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    one_line(done, f"error: refusing to load {path}: not a safe modhifi checkpoint (it contains objects that could")
    assert not (tmp_path / "CANARY").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_fifo, "{path} is a FIFO, not a checkpoint file"),
        (_zeros, "{path} is not a torch checkpoint (it begins with b'\\x00\\x00\\x00\\x00'"),
        (_device, "{path} is a device or socket, not a checkpoint file"),
    ],
    ids=["fifo", "zeros", "device"],
)
@pytest.mark.parametrize("command", ["evaluate", "prune"])
def test_what_is_not_a_checkpoint_is_named_in_one_line(cli, tmp_path, make, message, command):
    path = make(tmp_path)
    out = ["--out", tmp_path / "out.pt"] if command == "prune" else []
    result = cli(command, "--model", path, *out)
    assert result.returncode == 2
    one_line(result, "error: " + message.format(path=path))
    assert not (tmp_path / "out.pt").exists()


# --- a pruned image folder's shape record ----------------------------------------------------


def _shapes_case(folder: Path, case: str) -> None:
    shapes = folder / "modhifi_shapes.json"
    if case == "not-utf8":
        shapes.write_bytes(b'{"layer_shapes": {"\xff\xfe": 1}}')
    elif case == "a-folder":
        shapes.mkdir()
    else:  # a conv 100000 x 100000 x 3 x 3: 360 GB of float32 if allocated
        conv = "resnet.embedder.embedder.convolution"
        shapes.write_text(json.dumps({"layer_shapes": {conv: {"weight": [100000, 100000, 3, 3], "groups": 1}}}))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not-utf8", "modhifi_shapes.json is not a shape record (UnicodeDecodeError)"),
        ("a-folder", "modhifi_shapes.json is not a shape record (a JSON file of at most 16 MiB)"),
        ("huge", "wider than the architecture's"),
    ],
)
def test_a_bad_shape_record_is_one_line_before_anything_is_allocated(cli, tmp_path, case, message):
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=10)
    folder = tmp_path / "resnet"
    ResNetForImageClassification(config).save_pretrained(folder)
    _shapes_case(folder, case)
    before = hashes(tmp_path)
    result = cli("evaluate", "--model", f"hf:{folder}", "--data", "digits", "--image-size", 8)
    assert result.returncode == 2
    one_line(result, "error: ", message)
    assert hashes(tmp_path) == before


def test_weights_of_another_shape_than_the_config_name_the_tensor(cli, tmp_path, llama, text):
    folder = tmp_path / "model"
    shutil.copytree(llama, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"intermediate_size": 48}))
    before = hashes(tmp_path)
    result = cli("evaluate", "--model", f"hf:{folder}", "--text", text, "--length", 8, "--samples", 1)
    assert result.returncode == 2
    one_line(result, f"error: {folder / 'model.safetensors'}: tensor model.layers.0.mlp.", "config.json makes it")
    assert "report" not in result.stderr and hashes(tmp_path) == before


def test_a_gguf_with_a_gguf_magic_and_garbage_after_it_is_one_line(cli, tmp_path, text):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "model.gguf").write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    before = hashes(tmp_path)
    result = cli("evaluate", "--model", f"hf:{tmp_path / 'g'}", "--text", text, "--length", 8, "--samples", 1)
    assert result.returncode == 2
    one_line(result, f"error: {tmp_path / 'g' / 'model.gguf'} is not a readable GGUF file")
    assert hashes(tmp_path) == before


# --- finetune --epochs 0: BatchNorm recalibration only, refused where it would change nothing


def test_finetune_epochs_0_with_frozen_batchnorm_is_refused(cli, tmp_path, tiny_digits_checkpoint):
    model = tmp_path / "model.pt"
    shutil.copy(tiny_digits_checkpoint, model)
    before = hashes(tmp_path)
    args = ["--model", model, "--data", "real", "--epochs", 0, "--batchnorm", "frozen", "--out", tmp_path / "o.pt"]
    result = cli("finetune", *args)
    assert result.returncode == 2, result.stderr
    one_line(result, "epochs 0 only re-estimates BatchNorm statistics", "frozen", "nothing would change")
    assert hashes(tmp_path) == before


def test_finetune_epochs_0_says_it_only_recalibrated_batchnorm(cli, tmp_path, tiny_digits_checkpoint):
    result = cli(
        "finetune", "--model", tiny_digits_checkpoint, "--data", "real", "--epochs", 0, "--out", tmp_path / "o.pt",
        "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["epochs"] == 0
    assert metrics["done"].startswith("no training (epochs 0): BatchNorm statistics re-estimated on ")
    help_text = " ".join(cli("finetune", "--help").stdout.replace("│", " ").split())
    assert "0: no training, only re-estimate BatchNorm statistics" in help_text


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not-utf8", "modhifi_shapes.json is not a shape record (UnicodeDecodeError)"),
        ("a-folder", "modhifi_shapes.json is not a shape record (a JSON file of at most 16 MiB)"),
        ("huge", "wider than the architecture's"),
    ],
)
def test_a_bad_shape_record_is_refused_at_run_start(cli, tmp_path, case, message):
    """`modhifi run` of a pruned HF image folder checks its shape record before anything is written."""
    from pipeline_workspace import image_params, write_params
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=10)
    folder = tmp_path / "resnet"
    ResNetForImageClassification(config).save_pretrained(folder)
    _shapes_case(folder, case)
    root = tmp_path / "ws"
    root.mkdir()
    write_params(root, image_params(folder))
    before = hashes(tmp_path)
    result = cli("run", "--workspace", root)
    assert result.returncode == 2, result.stderr[-2000:]
    one_line(result, "error: ", message)
    assert hashes(tmp_path) == before
    assert not any((root / name).exists() for name in ("dvc.yaml", ".dvc", "mlflow.db", ".prefect"))


# --- --out on an ancestor the input records only by hash ---------------------------------------


def test_zoo_out_on_an_ancestor_recorded_by_hash_is_refused(cli, tmp_path, tiny_digits_checkpoint):
    """The parent checkpoint kept under another name elsewhere: its sha256 is the child's recorded parent."""
    from modhifi_core.checkpoint import load_checkpoint, save_checkpoint
    from modhifi_core.metadata import read_metadata

    parent = load_checkpoint(tiny_digits_checkpoint)
    child = tmp_path / "work" / "child.pt"
    child.parent.mkdir()
    metadata = read_metadata(parent.metadata).derive("finetune", parent.sha256).to_dict()
    save_checkpoint(child, parent.model, parent.config, metadata=metadata)
    ancestor = tmp_path / "elsewhere" / "renamed.pt"
    ancestor.parent.mkdir()
    shutil.copy(tiny_digits_checkpoint, ancestor)
    before = hashes(tmp_path)
    result = cli(*ZOO_COMMANDS["finetune"], "--model", child, "--out", ancestor, "--overwrite")
    assert result.returncode == 2, result.stderr
    one_line(result, f"--out {ancestor} is an ancestor of the input {child}", "parent 'model'")
    assert hashes(tmp_path) == before


def test_hf_out_on_the_source_folder_its_lineage_names_is_refused(cli, tmp_path, llama, text):
    """A pruned folder's modhifi.json names its source's weights by file and sha256; a copy of
    that source elsewhere is refused as --out of a prune of the pruned folder."""
    source = tmp_path / "source"
    shutil.copytree(llama, source)
    child = tmp_path / "child"
    assert cli(*_prune_hf(source, text, child)).returncode == 0
    ancestor = tmp_path / "elsewhere"
    shutil.copytree(source, ancestor)
    before = hashes(tmp_path)
    result = cli(*_prune_hf(child, text, ancestor), "--overwrite")
    assert result.returncode == 2, result.stderr
    one_line(result, f"--out {ancestor} is an ancestor of the input {child}", "model.safetensors")
    assert hashes(tmp_path) == before


def test_an_unrelated_existing_out_is_still_replaced_with_overwrite(cli, tmp_path, tiny_digits_checkpoint):
    out = tmp_path / "old.pt"
    out.write_bytes(b"an older result")
    result = cli(*ZOO_COMMANDS["finetune"], "--model", tiny_digits_checkpoint, "--out", out, "--overwrite")
    assert result.returncode == 0, result.stderr


# --- the options and commands of the other issues: --device/--dtype, modhifi init ----------------

COMPUTE_COMMANDS = {
    "evaluate": ["evaluate", "--model", "{model}"],
    "prune": ["prune", "--model", "{model}", "--out", "{out}"],
    "unlearn": ["unlearn", "--model", "{model}", "--forget-class", "3", "--out", "{out}"],
    "finetune": ["finetune", "--model", "{model}", "--data", "real", "--out", "{out}"],
    "synthesize": ["synthesize", "--model", "{model}", "--out", "{out}"],
    "train": ["train", "--out", "{out}"],
}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--device", "tpu"], "device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
        (["--device", "cpu:1"], "device must be auto, cpu, cuda or cuda:N, got 'cpu:1'"),
        (["--dtype", "float64"], "dtype must be one of float32, bfloat16, float16, got 'float64'"),
    ],
    ids=["tpu", "cpu-index", "float64"],
)
@pytest.mark.parametrize("command", COMPUTE_COMMANDS)
def test_a_bad_device_or_dtype_is_one_line_in_every_command(
    cli, tmp_path, tiny_digits_checkpoint, command, option, message
):
    model = tmp_path / "model.pt"
    shutil.copy(tiny_digits_checkpoint, model)
    args = [a.format(model=model, out=tmp_path / "out") for a in COMPUTE_COMMANDS[command]]
    before = hashes(tmp_path)
    result = cli(*args, *option)
    assert result.returncode == 2, result.stderr
    one_line(result, "error: " + message)
    assert hashes(tmp_path) == before


def _init_target(tmp_path: Path, case: str) -> tuple[list, str]:
    """`modhifi init` arguments of `case` and the words its one line must hold."""
    if case == "non-empty":
        (tmp_path / "work").mkdir()
        (tmp_path / "work" / "mine.txt").write_text("keep")
        return [tmp_path / "work"], "already exists and is not an empty folder"
    if case == "a-file":
        (tmp_path / "work").write_text("keep")
        return [tmp_path / "work"], "already exists and is not an empty folder"
    if case == "under-a-file":
        (tmp_path / "afile").write_text("keep")
        return [tmp_path / "afile" / "work"], f"cannot create it, {tmp_path / 'afile'} is a file"
    if case == "checkout-outputs":
        return [REPO / "outputs" / "my-workspace"], "lies inside modhifi's own code folder"
    if case == "missing-source":
        return [tmp_path / "work", "--model", tmp_path / "no-such.pt"], "no-such.pt"
    return [tmp_path / "work", "--model", f"hf:{tmp_path / 'no-such-folder'}"], "no-such-folder"


@pytest.mark.parametrize(
    "case", ["non-empty", "a-file", "under-a-file", "checkout-outputs", "missing-source", "missing-hf-folder"]
)
def test_modhifi_init_refusals_are_one_line_and_write_nothing(cli, tmp_path, case):
    args, words = _init_target(tmp_path, case)
    before, checkout = hashes(tmp_path), sorted(p.name for p in (REPO / "outputs").glob("*"))
    result = cli("init", *args)
    assert result.returncode == 2, result.stderr
    one_line(result, "error: ", words)
    assert hashes(tmp_path) == before
    assert sorted(p.name for p in (REPO / "outputs").glob("*")) == checkout
    assert not (tmp_path / "work").is_dir() or case == "non-empty"


# --- mlflow.db deleted between runs ----------------------------------------------------------


def test_a_deleted_mlflow_store_is_recreated_and_the_lost_runs_named(tmp_path):
    """What `modhifi run` does at start (`flows.pipeline.run_stages` prints it as one warning
    line): the ledger of parent runs beside the store names the runs whose records went."""
    import mlflow

    from tasks import tracking
    from tasks.workspace import Workspace

    ws = Workspace(tmp_path)
    assert tracking.recreate_lost_store(ws) is None and not (tmp_path / "mlflow.db").exists(), "nothing to recreate"
    client = mlflow.tracking.MlflowClient(tracking_uri=ws.mlflow_uri)
    run = client.create_run(tracking.configure(ws), run_name="pipeline 2026-01-01 00:00:00")
    tracking.remember_run(ws, run.info.run_id, run.info.run_name)
    assert tracking.recreate_lost_store(ws) is None, "the store is there: nothing lost"
    (tmp_path / "mlflow.db").unlink()
    # the next `modhifi run` is a new process (this one's MLflow keeps its engine on the unlinked file)
    code = "import sys; from tasks import tracking; from tasks.workspace import Workspace; "
    code += "print(tracking.recreate_lost_store(Workspace(__import__('pathlib').Path(sys.argv[1]))))"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    line = done.stdout.strip().splitlines()[-1]
    assert "mlflow.db was deleted: a new MLflow store is made; the records of 1 earlier run(s) are gone" in line
    assert f"pipeline 2026-01-01 00:00:00 ({run.info.run_id})" in line
    assert (tmp_path / "mlflow.db").is_file()
    assert json.loads((tmp_path / tracking.RUN_LEDGER).read_text()) == [], "said once"


# --- a full disk during a run (ulimit -f in a child) -------------------------------------------


def test_a_run_under_a_file_size_limit_is_one_line_naming_the_files(tmp_path, llama):
    """Prefect's server writes its database first, in its own process (a restart loop or
    HTTP 500 that names nothing): `modhifi run` refuses before it starts. A stage's own
    write under the limit is `test_hardening`'s `cannot write X: File too large`."""
    from pipeline_workspace import language_params, write_params

    root = tmp_path / "ws"
    root.mkdir()
    (root / "held-out.txt").write_text(TEXT)
    write_params(root, language_params(llama, root / "held-out.txt"))
    before = hashes(tmp_path)
    command = f"ulimit -f 512; exec {sys.executable} -m flows.cli run --workspace {root}"
    env = dict(os.environ, PYTHONPATH=str(REPO), PREFECT_HOME=str(root / ".prefect"))
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    one_line(done, "error: files are limited to 512 KiB here (ulimit -f): ", str(root / "mlflow.db"))
    assert hashes(tmp_path) == before
    assert not any((root / name).exists() for name in ("dvc.yaml", ".dvc", "mlflow.db", ".prefect"))
