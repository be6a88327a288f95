"""Output agreement of two KServe v2 answers: label agreement for classifiers, cosine for embeddings."""

from __future__ import annotations

import pytest

from releases.comparator import agreement


def answer(**outputs: tuple[str, list, list]) -> dict:
    return {"outputs": [{"name": n, "datatype": d, "shape": s, "data": v} for n, (d, s, v) in outputs.items()]}


def test_labels_agree_by_share_of_equal_labels() -> None:
    a = answer(label=("INT64", [4, 1], [1, 2, 3, 4]), probabilities=("FP32", [4, 2], [0.1] * 8))
    b = answer(label=("INT64", [4, 1], [1, 2, 0, 4]), probabilities=("FP32", [4, 2], [0.9] * 8))
    assert agreement(a, b) == 0.75


def test_embeddings_agree_by_cosine_per_row() -> None:
    a = answer(EMBEDDING=("FP32", [2, 2], [1.0, 0.0, 0.0, 1.0]))
    b = answer(EMBEDDING=("FP32", [2, 2], [1.0, 0.0, 1.0, 0.0]))
    assert agreement(a, b) == pytest.approx(0.5)
    assert agreement(a, a) == pytest.approx(1.0)


def test_answers_of_different_shape_or_outputs_do_not_agree() -> None:
    a = answer(EMBEDDING=("FP32", [1, 2], [1.0, 0.0]))
    assert agreement(a, answer(OTHER=("FP32", [1, 2], [1.0, 0.0]))) == 0.0
    assert agreement(a, answer(EMBEDDING=("FP32", [1, 3], [1.0, 0.0, 0.0]))) == 0.0
    assert agreement(a, answer(EMBEDDING=("FP32", [1, 2], [-1.0, 0.0]))) == 0.0  # clamped at 0


def test_the_comparator_cli_names_a_certificate_folder_without_the_files(tmp_path, capsys):
    from releases.__main__ import main

    code = main(["comparator", "--stable", "127.0.0.1:1:2", "--candidate", "127.0.0.1:3:4", "--grpc-port", "0",
                 "--mtls-dir", str(tmp_path / "no-certs")])
    assert code != 0
    err = capsys.readouterr().err
    assert f"--mtls-dir {tmp_path / 'no-certs'}" in err and "is missing" in err and "make certs" in err
