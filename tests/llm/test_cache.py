"""llm.cache: hits and misses, the temperature rule, corrupt entries, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing as mp
import threading
from collections import Counter
from pathlib import Path

import pytest

from clinfuse.llm import (
    CachedBackend,
    CallableBackend,
    GenerationConfig,
    ImagePart,
    Message,
    TextBackend,
    prompt_hash,
)
from clinfuse.llm.cache import CACHE_FORMAT


class Counting:
    """A backend that answers ``"<n>:<last user text>"`` and counts its calls (thread-safe)."""

    def __init__(self, model_id: str = "count-v1") -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.inner = CallableBackend(self._answer, model_id)
        self.model_id = model_id

    def _answer(self, messages: list[Message]) -> str:
        with self._lock:
            self.calls[messages[-1].text] += 1
            return f"{sum(self.calls.values())}:{messages[-1].text}"

    def generate(self, messages, config=None):
        return self.inner.generate(messages, config)


def ask(text: str) -> list[Message]:
    return [Message("system", "answer"), Message("user", text)]


def entry_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.json"))


def check_entries(root: Path) -> set[str]:
    """Every file is a whole, valid entry in its right shard; no temporary files are left."""
    leftovers = [p for p in root.rglob("*") if p.is_file() and p.suffix != ".json"]
    assert leftovers == []
    hashes = set()
    for p in entry_files(root):
        entry = json.loads(p.read_text())
        h = entry["prompt_hash"]
        assert entry["format"] == CACHE_FORMAT
        assert p == root / h[:2] / f"{h}.json"
        assert entry["completion"]["prompt_hash"] == h and entry["completion"]["cached"] is False
        assert entry["request"]["model_id"] == entry["completion"]["model_id"]
        hashes.add(h)
    return hashes


def test_miss_then_hit_returns_the_stored_answer(tmp_path: Path) -> None:
    inner = Counting()
    b = CachedBackend(inner, tmp_path)
    assert isinstance(b, TextBackend) and b.model_id == "count-v1"
    first = b.generate(ask("QT?"))
    second = b.generate(ask("QT?"))
    assert (first.cached, second.cached) == (False, True)
    assert second.text == first.text == "1:QT?"
    assert (second.prompt_hash, second.created) == (first.prompt_hash, first.created)
    assert inner.calls == Counter({"QT?": 1})
    assert b.stats == {"hits": 1, "misses": 1, "bypassed": 0, "write_errors": 0}
    h = prompt_hash(ask("QT?"), "count-v1", GenerationConfig())
    assert entry_files(tmp_path) == [tmp_path / h[:2] / f"{h}.json"]
    assert check_entries(tmp_path) == {h}


def test_any_change_of_request_misses(tmp_path: Path) -> None:
    inner = Counting()
    b = CachedBackend(inner, tmp_path)
    b.generate(ask("a"))
    b.generate(ask("a"), GenerationConfig(max_tokens=5))
    b.generate(ask("b"))
    assert CachedBackend(Counting("count-v2"), tmp_path).generate(ask("a")).cached is False
    assert b.stats["misses"] == 3 and len(entry_files(tmp_path)) == 4


def test_a_new_process_or_object_reads_the_same_cache(tmp_path: Path) -> None:
    img = ImagePart(b"\x89PNG" + bytes(1000), "image/png")
    msgs = [Message("user", ["describe", img])]
    CachedBackend(Counting(), tmp_path).generate(msgs)
    again = Counting()
    assert CachedBackend(again, tmp_path).generate(msgs).cached is True
    assert again.calls == Counter()
    # the entry records the image by its hash, never its bytes
    (path,) = entry_files(tmp_path)
    part = json.loads(path.read_text())["request"]["messages"][0]["content"][1]
    assert part == {"type": "image", "mime": "image/png", "sha256": img.sha256}


def test_sampled_requests_bypass_the_cache_unless_seeded(tmp_path: Path) -> None:
    inner = Counting()
    b = CachedBackend(inner, tmp_path)
    hot = GenerationConfig(temperature=0.8)
    answers = [b.generate(ask("x"), hot) for _ in range(3)]
    assert [a.cached for a in answers] == [False] * 3 and inner.calls["x"] == 3
    assert entry_files(tmp_path) == [] and b.stats["bypassed"] == 3
    seeded = GenerationConfig(temperature=0.8, seed=1)
    assert [b.generate(ask("x"), seeded).cached for _ in range(2)] == [False, True]
    assert b.generate(ask("x"), GenerationConfig(temperature=0.8, seed=2)).cached is False
    assert inner.calls["x"] == 5


def test_corrupt_entry_is_recomputed_and_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inner = Counting()
    b = CachedBackend(inner, tmp_path)
    h = b.generate(ask("q")).prompt_hash
    path = b.path_for(h)
    for garbage in ["{truncated", json.dumps({"prompt_hash": "other"}), "[]"]:
        path.write_text(garbage)
        with caplog.at_level("WARNING", logger="clinfuse.llm.cache"):
            assert b.generate(ask("q")).cached is False
        assert "unreadable cache entry" in caplog.text
        caplog.clear()
        assert b.generate(ask("q")).cached is True  # rewritten whole
    assert inner.calls["q"] == 4
    assert check_entries(tmp_path) == {h}


def test_failed_write_returns_the_answer(tmp_path: Path) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    b = CachedBackend(Counting(), blocker)
    assert b.generate(ask("q")).text == "1:q"
    assert b.stats["write_errors"] == 1


def test_concurrent_threads_leave_whole_entries(tmp_path: Path) -> None:
    inner = Counting()
    b = CachedBackend(inner, tmp_path)
    prompts = [f"p{i}" for i in range(12)]
    results: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        for i in range(len(prompts)):
            p = prompts[(i + offset) % len(prompts)]
            c = b.generate(ask(p))
            with lock:
                results.append((p, c.text))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 * len(prompts)
    assert all(text.endswith(f":{p}") for p, text in results)
    want = {prompt_hash(ask(p), "count-v1", GenerationConfig()) for p in prompts}
    assert check_entries(tmp_path) == want
    s = b.stats
    assert s["hits"] + s["misses"] == 6 * len(prompts) and s["misses"] == sum(inner.calls.values())


def _process_worker(root: str, offset: int, n: int) -> None:
    b = CachedBackend(CallableBackend(lambda ms: "answer:" + ms[-1].text, "proc-v1"), root)
    for i in range(n):
        c = b.generate(ask(f"p{(i + offset) % n}"))
        assert c.text == f"answer:p{(i + offset) % n}"


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_concurrent_processes_leave_whole_entries(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")  # children inherit the imports: no start-up cost
    n = 40
    procs = [ctx.Process(target=_process_worker, args=(str(tmp_path), k, n)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
    for p in procs:
        if p.is_alive():  # pragma: no cover - only on a hang
            p.kill()
    assert [p.exitcode for p in procs] == [0] * 4
    want = {prompt_hash(ask(f"p{i}"), "proc-v1", GenerationConfig()) for i in range(n)}
    assert check_entries(tmp_path) == want
    again = CachedBackend(CallableBackend(lambda ms: "changed", "proc-v1"), tmp_path)
    assert all(again.generate(ask(f"p{i}")).text == f"answer:p{i}" for i in range(n))
