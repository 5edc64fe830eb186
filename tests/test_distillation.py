"""Fine-tuning: distillation on synthetic samples raises a damaged student's accuracy
toward its teacher's without real data, cross-entropy on real data works too, retain
classes keep a forgotten class forgotten, and bad input fails with one line."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modhifi_core.checkpoint import load_checkpoint, save_checkpoint
from modhifi_core.data import ArrayDataset
from modhifi_core.distillation import distillation_loss, finetune
from modhifi_core.errors import InputError
from modhifi_core.safe_io import sha256_file
from modhifi_core.synthesis import InversionConfig, save_synthetic, synthesize
from modhifi_core.training import accuracy, predict

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def teacher(tiny_digits_checkpoint):
    return load_checkpoint(tiny_digits_checkpoint)


@pytest.fixture(scope="module")
def synthetic(teacher):
    """20 inverted samples per class: 200 images, no real data."""
    return synthesize(teacher.model, 20, image_shape=SHAPE, config=InversionConfig(steps=60, batch_size=100))


def damaged(model, strength=1.0, seed=1):
    """A copy with gaussian noise of `strength` x each conv weight's std added."""
    student = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in student.parameters():
            if p.ndim == 4:
                p.add_(torch.randn(p.shape, generator=generator) * p.std() * strength)
    return student


def test_distillation_on_synthetic_samples_recovers_a_damaged_student(teacher, synthetic, digits):
    student = damaged(teacher.model)
    target = accuracy(teacher.model, digits.test)
    before = accuracy(student, digits.test)
    log = finetune(student, teacher.model, synthetic.samples, 3)
    after = accuracy(student, digits.test)
    assert before < target - 40, "the damage must be real for the test to mean anything"
    assert after - before > 0.6 * (target - before), (before, after, target)  # most of the loss recovered
    assert log["loss"] == "distillation" and log["samples"] == 200 and len(log["losses"]) == 3
    assert log["bn_recalibration_samples"] == 200 and not student.training


def test_synthetic_samples_teach_more_than_gaussian_noise(teacher, synthetic, digits):
    noise = synthesize(teacher.model, 20, image_shape=SHAPE, method="gaussian").samples
    gains = {"synthetic": 0.0, "noise": 0.0}
    for seed in (1, 2):  # recovery from noise varies a lot with the damage: average two
        for name, samples in (("synthetic", synthetic.samples), ("noise", noise)):
            student = damaged(teacher.model, seed=seed)
            finetune(student, teacher.model, samples, 3)
            gains[name] += accuracy(student, digits.test) / 2
    assert gains["synthetic"] > gains["noise"] + 10, gains


def test_cross_entropy_on_real_data_recovers_a_damaged_student(teacher, digits):
    student = damaged(teacher.model)
    before = accuracy(student, digits.test)
    log = finetune(student, None, digits.train, 2)
    assert log["loss"] == "cross_entropy" and log["samples"] == len(digits.train)
    assert accuracy(student, digits.test) > before + 40


def test_retain_classes_only_and_the_forgotten_class_stays_forgotten(teacher, synthetic, digits):
    student = damaged(teacher.model, strength=0.3)
    with torch.no_grad():  # "unlearn" class 3: its logit can never win
        student.fc.bias[3] = -1e3
    retain = [k for k in range(10) if k != 3]
    log = finetune(student, teacher.model, synthetic.samples, 2, classes=retain)
    assert log["samples"] == 180
    assert accuracy(student, digits.test.of_classes([3])) == 0.0
    assert accuracy(student, digits.test.of_classes(retain)) > 80.0


def test_unlabelled_samples_are_routed_by_the_teachers_prediction(teacher, synthetic):
    unlabelled = ArrayDataset(synthetic.samples.images, torch.full((200,), -1), 10)
    predicted = predict(teacher.model, unlabelled.images).argmax(1)
    log = finetune(damaged(teacher.model), teacher.model, unlabelled, 1, classes=[0, 1])
    assert log["samples"] == int(torch.isin(predicted, torch.tensor([0, 1])).sum())


def test_distillation_loss_is_the_tempered_kl_divergence():
    generator = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=generator), torch.randn(5, 4, generator=generator)
    expected = F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean") * 4
    assert float(distillation_loss(s, t, 2.0)) == pytest.approx(float(expected), rel=1e-5)
    assert float(distillation_loss(t, t, 3.0)) == pytest.approx(0.0, abs=1e-6)
    mask = torch.tensor([True, True, False, True])
    s.requires_grad_(True)
    loss = distillation_loss(s, t, 1.0, mask)
    assert torch.isfinite(loss)
    loss.backward()
    assert (s.grad[:, 2] > 0).all(), "the masked class's logit is pushed down"


def test_same_seed_same_weights_and_zero_epochs_only_recalibrates(teacher, synthetic):
    a, b = damaged(teacher.model), damaged(teacher.model)
    finetune(a, teacher.model, synthetic.samples, 1, seed=5)
    finetune(b, teacher.model, synthetic.samples, 1, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = damaged(teacher.model)
    weights = {k: v.clone() for k, v in c.named_parameters()}
    log = finetune(c, teacher.model, synthetic.samples, 0)
    assert log["losses"] == [] and np.isnan(log["final_loss"]) and log["bn_recalibration_samples"] == 200
    assert all(torch.equal(v, dict(c.named_parameters())[k]) for k, v in weights.items())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": -1}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"temperature": 0.0}, "temperature"),
        ({"batch_size": 0}, "batch_size"),
        ({"classes": [10]}, "classes"),
        ({"classes": []}, "classes"),
        ({"batchnorm": "reset"}, "batchnorm"),
    ],
)
def test_bad_arguments_are_refused(teacher, synthetic, kwargs, message):
    args = {"epochs": 1, **kwargs}
    with pytest.raises(InputError, match=message):
        finetune(copy.deepcopy(teacher.model), teacher.model, synthetic.samples, args.pop("epochs"), **args)


def test_cross_entropy_needs_labels(teacher):
    unlabelled = ArrayDataset(torch.zeros(4, *SHAPE), torch.full((4,), -1), 10)
    with pytest.raises(InputError, match="labelled"):
        finetune(copy.deepcopy(teacher.model), None, unlabelled, 1)


def test_frozen_batchnorm_keeps_the_running_statistics(teacher, synthetic):
    student = damaged(teacher.model, strength=0.3)
    buffers = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}
    log = finetune(student, teacher.model, synthetic.samples, 1, batchnorm="frozen")
    assert log["bn_recalibration_samples"] == 0
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in buffers.items())
    recalibrated = damaged(teacher.model, strength=0.3)
    finetune(recalibrated, teacher.model, synthetic.samples, 1)
    assert not torch.equal(recalibrated.bn1.running_mean, buffers["bn1.running_mean"])


@pytest.fixture
def damaged_checkpoint(teacher, tmp_path):
    path = tmp_path / "damaged.pt"
    save_checkpoint(path, damaged(teacher.model), teacher.config, metadata=teacher.metadata)
    return path


def test_cli_finetune_distils_on_a_synthetic_folder(cli, teacher, synthetic, damaged_checkpoint, tmp_path):
    save_synthetic(synthetic, tmp_path / "syn")
    out = tmp_path / "ft.pt"
    result = cli(
        "finetune", "--model", damaged_checkpoint, "--teacher", teacher.path,
        "--data", f"synthetic:{tmp_path / 'syn'}", "--epochs", 2, "--out", out, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert report["loss"] == "distillation" and report["samples"] == 200
    assert report["test_accuracy"] > report["test_accuracy_before"] + 30
    assert report["teacher_test_accuracy"] == pytest.approx(accuracy(teacher.model, load_test(teacher)))
    ckpt = load_checkpoint(out)
    assert ckpt.sha256 == report["sha256"] and ckpt.metadata["operation"] == "finetune"
    parents = ckpt.metadata["parents"]
    assert parents["model"] == sha256_file(damaged_checkpoint) and parents["teacher"] == teacher.sha256
    assert parents["synthetic"] == sha256_file(tmp_path / "syn" / "samples.npz")


def load_test(ckpt):
    from modhifi_core.data import load_from_spec

    return load_from_spec(ckpt.metadata["data"]).test


def test_cli_finetune_cross_entropy_on_digits_keeps_a_sparse_model_sparse(cli, teacher, tmp_path):
    from modhifi_core.unstructured.masks import Masks

    model = damaged(teacher.model, strength=0.5)
    masks = Masks.dense(model)
    for mask in masks.tensors.values():
        mask[::2] = False
    masks.apply(model)
    path = tmp_path / "sparse.pt"
    save_checkpoint(path, model, teacher.config, metadata=teacher.metadata, extra=masks.to_extra())
    out = tmp_path / "ft.pt"
    result = cli("finetune", "--model", path, "--data", "digits", "--epochs", 1, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    assert result.json()["loss"] == "cross_entropy"
    tuned = load_checkpoint(out)
    assert Masks.from_extra(tuned.extra, tuned.model).violations(tuned.model) == 0


def test_cli_finetune_leaves_out_the_class_modhifi_unlearn_recorded(cli, teacher, digits, tmp_path):
    path = tmp_path / "unlearned.pt"
    metadata = {**teacher.metadata, "stage": "unlearn", "unlearning": {"forget": {"class": 3}}}
    save_checkpoint(path, teacher.model, teacher.config, metadata=metadata)
    result = cli("finetune", "--model", path, "--data", "digits", "--epochs", 1, "--out", tmp_path / "ft.pt", "--json")
    assert result.returncode == 0, result.stderr
    report = result.json()
    assert report["forget_class"] == 3 and isinstance(report["forget_accuracy"], float)
    assert report["batchnorm"] == "frozen" and report["lr"] == 0.001, "recalibrating would undo the unlearning"
    assert report["samples"] == int((digits.train.labels != 3).sum())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "synthetic:{tmp}/missing"], "synthetic sample folder not found"),
        (["--data", "synthetic:{tmp}/empty"], "holds no .npz or .pt files"),
        (["--data", "synthetic:{tmp}/bad_labels"], "must lie in [0, 10)"),
        (["--data", "imagenet"], "--data must be"),
        (["--data", "synthetic", "--no-teacher"], "needs --teacher"),
        (["--forget-class", "10"], "forget class 10 does not exist"),
        (["--epochs", "-1"], "--epochs: input should be greater than or equal to 0"),
        (["--per-class", "0"], "--per-class: input should be greater than or equal to 1"),
        (["--batchnorm", "reset"], "--batchnorm: input should be 'recalibrate' or 'frozen'"),
        (["--lr", "0"], "--lr: input should be greater than 0"),
    ],
)
def test_cli_finetune_bad_input_exits_2_and_writes_nothing(cli, teacher, tmp_path, extra, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad_labels").mkdir()
    np.savez(tmp_path / "bad_labels" / "a.npz", images=np.zeros((2, *SHAPE), np.float32), labels=np.array([0, 10]))
    out = tmp_path / "out.pt"
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra if a != "--no-teacher"]
    teacher_args = [] if "--no-teacher" in extra else ["--teacher", teacher.path]
    result = cli("finetune", "--model", teacher.path, *teacher_args, "--out", out, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()
