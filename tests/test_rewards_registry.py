"""Registry (names, duplicates, entry-point plug-ins), the base contract, and combine()."""

from __future__ import annotations

import importlib
import importlib.metadata
import pickle
import subprocess
import sys
import textwrap

import pytest

from trl_grpo_plus.rewards import Verifier, combine, get_verifier, list_verifiers, register_verifier, registry
from trl_grpo_plus.rewards.base import completion_text


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in a test are thrown away afterwards."""
    registry._ensure_loaded()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return registry


class Half(Verifier):
    def score(self, completion, **row):
        return 0.5


def test_builtins_are_listed():
    names = list_verifiers()
    assert {"math", "gsm8k", "format"} <= set(names)
    assert names == sorted(names)


def test_register_rejects_duplicates_unless_override(scratch_registry):
    register_verifier("half")(Half)
    assert get_verifier("half")(completions=["a", "b"]) == [0.5, 0.5]
    register_verifier("half")(Half)  # the same object again is harmless

    class Other(Half):
        def score(self, completion, **row):
            return 0.25

    with pytest.raises(ValueError, match="already registered.*override=True"):
        register_verifier("half")(Other)
    with pytest.raises(ValueError, match="already registered"):
        register_verifier("math")(Other)  # built-ins are protected too
    register_verifier("half", override=True)(Other)
    assert get_verifier("half")(completions=["a"]) == [0.25]
    with pytest.raises(ValueError, match="non-empty string"):
        register_verifier("")


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(KeyError) as err:
        get_verifier("maths")
    msg = str(err.value)
    assert "'maths'" in msg and "math" in msg and "gsm8k" in msg and "format" in msg
    assert registry.ENTRY_POINT_GROUP in msg


PLUGIN = textwrap.dedent('''
    from trl_grpo_plus.rewards import Verifier

    class LengthJudge(Verifier):
        """1.0 for completions shorter than `limit` characters."""

        def __init__(self, *, limit=5, name=None):
            super().__init__(name=name)
            self.limit = limit

        def score(self, completion, **row):
            return 1.0 if len(completion) < self.limit else 0.0
''')


def _install_tiny_distribution(root, *, broken=False):
    """A real (if minimal) installed distribution: a package plus a .dist-info with entry points."""
    pkg = root / "tiny_judge"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(PLUGIN)
    info = root / "tiny_judge-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-judge\nVersion: 0.1\n")
    eps = "[trl_grpo_plus.verifiers]\ntiny_length = tiny_judge:LengthJudge\nmath = tiny_judge:LengthJudge\n"
    if broken:
        eps += "tiny_broken = tiny_judge:DoesNotExist\n"
    (info / "entry_points.txt").write_text(eps)
    (info / "RECORD").write_text("")


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch, scratch_registry, caplog):
    _install_tiny_distribution(tmp_path, broken=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert importlib.metadata.distribution("tiny-judge").version == "0.1"
    monkeypatch.setattr(registry, "_loaded", False)  # as in a fresh process
    with caplog.at_level("WARNING"):
        names = list_verifiers()
    assert "tiny_length" in names and "math" in names
    assert "tiny_broken" not in names and "tiny_broken" in caplog.text  # logged, not fatal
    # a plug-in cannot take a built-in's name
    assert type(get_verifier("math")).__name__ == "MathVerifier" and "'math' (tiny_judge:LengthJudge) skipped" in caplog.text
    registry.load_entry_points()  # a rescan is quiet and keeps the plug-in
    assert "tiny_length" in list_verifiers()
    judge = get_verifier("tiny_length", limit=4)
    assert judge.__name__ == "tiny_length"
    assert judge(prompts=["p", "p"], completions=["abc", "abcdef"]) == [1.0, 0.0]
    monkeypatch.delitem(sys.modules, "tiny_judge", raising=False)


def test_entry_point_plugin_in_a_fresh_interpreter(tmp_path):
    # No monkeypatching: a new process with the distribution on its path finds it by itself.
    _install_tiny_distribution(tmp_path)
    code = ("from trl_grpo_plus.rewards import get_verifier, list_verifiers;"
            "assert 'tiny_length' in list_verifiers();"
            "print(get_verifier('tiny_length')(completions=['ab', 'abcdefg']))")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1.0, 0.0]"


# ---------------------------------------------------------------------------------- base contract
def test_completion_text_forms():
    assert completion_text("x") == "x"
    assert completion_text(None) == ""
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "a\nb"
    assert completion_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]) == "a"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}]) == "hi"


class Exploding(Verifier):
    def score(self, completion, **row):
        if completion == "boom":
            raise RuntimeError("bad sample")
        return 1.0


def test_verifier_never_raises_and_counts():
    v = Exploding(name="exploding")
    assert v(prompts=["p"] * 3, completions=["ok", "boom", "ok"]) == [1.0, None, 1.0]
    assert v.stats["errors"] == 1 and v.stats["unscorable"] == 1 and v.stats["samples"] == 3
    assert v.__name__ == "exploding"


# ---------------------------------------------------------------------------------------- combine
class Table(Verifier):
    def __init__(self, values, name):
        super().__init__(name=name)
        self.values = values

    def score_batch(self, prompts, completions, columns):
        return list(self.values)


def test_combine_weights_gate_and_none():
    correct = Table([1.0, 1.0, 0.0, None, None], "correct")
    fmt = Table([1.0, 0.0, 1.0, 1.0, None], "fmt")
    length = Table([0.5, 0.5, 0.5, None, None], "length")
    c = combine([correct, length], [2.0, 1.0], gate=fmt)
    # sample 0: gate ok -> 2*1 + 0.5; 1: gate fails -> 0; 2: 2*0 + 0.5;
    # 3: every component None -> None; 4: every component None (gate None too) -> None
    assert c(prompts=["p"] * 5, completions=["c"] * 5) == [2.5, 0.0, 0.5, None, None]
    assert c.__name__ == "correct+length|gate=fmt"
    assert c.stats["gated"] == 1 and c.stats["unscorable"] == 2
    assert c.component_stats()["fmt"]["samples"] == 5


def test_combine_none_component_is_skipped_not_zeroed():
    c = combine([Table([None, 1.0], "a"), Table([0.5, 0.5], "b")])
    assert c(completions=["x", "y"]) == [0.5, 1.5]


def test_combine_by_name_gated_on_format():
    c = combine(["math"], gate=get_verifier("format"), name="math_if_formatted")
    completions = [
        "<think>7*6</think><answer>\\boxed{42}</answer>",  # right and formatted
        "\\boxed{42}",  # right, not formatted -> 0
        "<think>7*6</think><answer>41</answer>",  # formatted, wrong -> 0
    ]
    assert c(prompts=["p"] * 3, completions=completions, answer=["42"] * 3) == [1.0, 0.0, 0.0]
    assert c.__name__ == "math_if_formatted"
    stats = c.component_stats()
    assert stats["math"]["correct"] == 2 and stats["format"]["passed"] == 2
    w = pickle.loads(pickle.dumps(c))
    assert w(prompts=["p"], completions=completions[:1], answer=["42"]) == [1.0]


def test_combine_validates_arguments():
    with pytest.raises(ValueError, match="at least one"):
        combine([])
    with pytest.raises(ValueError, match="2 weights for 1"):
        combine(["format"], [1.0, 2.0])
    with pytest.raises(KeyError, match="Unknown verifier"):
        combine(["nope"])
    with pytest.raises(TypeError, match="not a reward function"):
        combine([3])


# ----------------------------------------------------------------------------------- import weight
def test_rewards_and_math_workers_do_not_import_trl_or_torch():
    # The verifiers must stay light: a fresh interpreter builds and runs them without trl/torch,
    # and the math worker processes (forked from a zygote, never from the caller) map no libtorch
    # even when the calling process has imported torch.
    code = textwrap.dedent("""
        import sys
        from trl_grpo_plus.rewards import get_verifier, _math_pool
        v = get_verifier("math")
        assert v(prompts=["p"], completions=["\\\\boxed{\\\\frac{2}{4}}"], answer=["0.5"]) == [1.0]
        assert "trl" not in sys.modules and "torch" not in sys.modules, "trl/torch imported"
        import torch  # the caller may have torch loaded; the workers must not inherit it
        p2 = _math_pool.configure_pool(workers=1)
        p2.start()
        maps = open(f"/proc/{p2._workers[0].pid}/maps").read()
        assert "libtorch" not in maps, "worker maps libtorch"
        assert v(prompts=["p"], completions=["\\\\boxed{3}"], answer=["3.0"]) == [1.0]
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
