"""Tunsr on CUDA: same scores as on the CPU, and a short fit that trains and ranks on the GPU."""

from __future__ import annotations

import pytest
import torch

import clinfuse
from clinfuse.methods.tunsr.config import TunsrConfig
from clinfuse.methods.tunsr.data import add_inverse
from clinfuse.methods.tunsr.graph import Adjacency
from clinfuse.methods.tunsr.model import TunsrModel
from clinfuse.methods.tunsr.synthetic import make_synthetic_kg

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("score", ["att", "emd", "both"])
def test_cuda_scores_equal_cpu_scores(score: str) -> None:
    kg, _ = make_synthetic_kg(seed=0)
    cfg = TunsrConfig(score=score, message_weight="gate" if score != "att" else "mass")
    torch.manual_seed(0)
    model = TunsrModel(cfg, kg.n_entities, kg.n_relations, kg.n_times).eval()
    adj = Adjacency.from_triples(add_inverse(kg.facts, kg.n_relations), kg.n_entities)
    q = torch.as_tensor(kg.queries["test"][:64])
    with torch.no_grad():
        cpu = model(q, adj).scores
        gpu = model.to("cuda")(q.cuda(), Adjacency.coerce(adj, "cuda")).scores.cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-5)


def test_cuda_fit_trains_and_ranks(tmp_path) -> None:
    learner, run = clinfuse.run(
        "tunsr",
        preset="quick",
        overrides=["progress=false", "device=cuda", "epochs=3", "patience=0"],
        out=tmp_path / "run",
    )
    m = run.read_metrics()
    assert m["test_mrr"] > 0.3  # 3 epochs; chance on 200 entities is about 0.03
    assert next(learner.model.parameters()).device.type == "cpu"  # handed back on the CPU
