"""DIB with the BERT text encoder, end to end on a tiny random BERT saved to a local directory."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import clinfuse
from clinfuse.methods.dib.data import save_mmsa_pickle
from clinfuse.methods.dib.synthetic import make_synthetic_msa

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert")
    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_pickle(tmp_path_factory):
    data = make_synthetic_msa("mosi", n_train=64, n_valid=32, n_test=32, seed=1)
    rng = np.random.default_rng(0)
    splits = {}
    for name, s in data.splits.items():
        n, length = s.text.shape[:2]
        ids = rng.integers(5, 64, size=(n, length))
        mask = (np.arange(length)[None, :] < s.text_lengths[:, None]).astype(np.int64)
        ids = ids * mask
        ids[:, 0] = 2  # [CLS]
        bert = np.stack([ids, mask, np.zeros_like(ids)], axis=1)
        splits[name] = dataclasses.replace(s, text_bert=bert)
    path = tmp_path_factory.mktemp("data") / "unaligned_50.pkl"
    save_mmsa_pickle(dataclasses.replace(data, splits=splits), path)
    return path


def test_bert_encoder_trains_at_its_own_learning_rate(tiny_bert, bert_pickle, tmp_path) -> None:
    before = transformers.BertModel.from_pretrained(tiny_bert).state_dict()
    learner, run = clinfuse.run(
        "dib",
        preset="quick",
        overrides=[
            "text_encoder=bert",
            f"bert_path={tiny_bert}",
            "epochs=1",
            "progress=false",
            "batch_size=16",
            "lr_bert=1e-3",
        ],
        data=bert_pickle,
        out=tmp_path / "run",
    )
    groups = learner.model.param_groups()
    assert [g["lr"] for g in groups] == [learner.config.lr, 1e-3]
    bert_params = {id(p) for p in groups[1]["params"]}
    assert bert_params == {id(p) for p in learner.model.encoders["text"].bert.parameters()}
    after = learner.model.encoders["text"].bert.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "fine-tuning left every BERT weight unchanged"
    assert 0.0 <= run.read_metrics()["test_non0_acc2"] <= 1.0
    # reload from the run directory: the BERT weights travel in the checkpoint
    again = clinfuse.load(run.path)
    batch_pred = again.predict(again.load_data(str(bert_pickle)), "test")["pred"].to_numpy()
    assert np.allclose(
        batch_pred, learner.predict(learner.load_data(str(bert_pickle)), "test")["pred"]
    )


def test_missing_text_bert_is_a_clear_error(tiny_bert, tmp_path) -> None:
    from clinfuse.core.errors import ClinfuseError

    plain = tmp_path / "plain.pkl"
    save_mmsa_pickle(make_synthetic_msa("mosi", n_train=16, n_valid=8, n_test=8), plain)
    with pytest.raises(ClinfuseError, match="text_bert"):
        clinfuse.run(
            "dib",
            overrides=["text_encoder=bert", f"bert_path={tiny_bert}"],
            data=plain,
            out=tmp_path / "r",
        )
    assert not (tmp_path / "r").exists()
