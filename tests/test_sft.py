"""SFT: loss masking against the chat template's assistant spans, sft_loss parity, task data, bad inputs."""

import random

import pytest
import torch
import torch.nn.functional as F

from course_utils import data, sft
from course_utils.models import load_model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_model("course-tiny", device="cpu")


def _conversations(n, seed):
    """Mixed single- and multi-turn conversations, some with a system prompt."""
    rng = random.Random(seed)
    convs = []
    for i in range(n):
        tasks = data.make_tasks(3, "train", seed=seed * 100 + i)
        msgs = [{"role": "system", "content": "You answer briefly."}] if rng.random() < 0.5 else []
        for t in tasks[: rng.randint(1, 3)]:
            msgs += data.task_to_messages(t)
        convs.append(msgs)
    return convs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_match_template_generation_spans(tiny, seed):
    """The unmasked labels are exactly the tokens inside {% generation %} (transformers' assistant mask)."""
    _, tok = tiny
    for msgs in _conversations(6, seed):
        ex = sft.build_sft_example(tok, msgs)
        ref = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        assert ex["input_ids"] == list(ref["input_ids"])
        got = [int(lab != sft.IGNORE_INDEX) for lab in ex["labels"]]
        assert got == list(ref["assistant_masks"]), f"mask differs for {msgs}"
        kept = [lab for lab in ex["labels"] if lab != sft.IGNORE_INDEX]
        assert kept == [i for i, m in zip(ref["input_ids"], ref["assistant_masks"]) if m]
        # every assistant reply (and its <|im_end|>) is learned, nothing else
        decoded = tok.decode(kept)
        assert decoded == "".join(m["content"] + "<|im_end|>" for m in msgs if m["role"] == "assistant")


@pytest.mark.parametrize("shape", [(2, 7, 11), (3, 5, 963), (1, 16, 4)])
def test_sft_loss_matches_cross_entropy(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    B, T, V = shape
    logits = torch.randn(B, T, V, generator=gen, dtype=torch.float64)
    labels = torch.randint(V, (B, T), generator=gen)
    labels[torch.rand(B, T, generator=gen) < 0.4] = -100
    labels[0, 1] = 3  # at least one labelled target
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    got = sft.sft_loss(logits, labels)
    assert torch.allclose(got.double(), ref, atol=1e-6), f"max_diff {(got.double() - ref).abs().item():.3g}"


def test_sft_loss_matches_transformers_model_loss(tiny):
    model, tok = tiny
    examples = [sft.build_sft_example(tok, c) for c in data.make_sft_conversations(5, "train", seed=3)]
    batch = sft.collate(examples, tok.pad_token_id)
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        got = sft.sft_loss(out.logits, batch["labels"])
    diff = (got - out.loss).abs().item()
    assert diff < 1e-5, f"max_diff {diff:.3g}"


def test_collate_pads_right_and_masks_padding(tiny):
    _, tok = tiny
    exs = [sft.build_sft_example(tok, c) for c in data.make_sft_conversations(4, "train", seed=5)]
    b = sft.collate(exs, tok.pad_token_id)
    for i, e in enumerate(exs):
        n = len(e["input_ids"])
        assert b["attention_mask"][i].sum().item() == n
        assert b["input_ids"][i, :n].tolist() == e["input_ids"]
        assert (b["labels"][i, n:] == -100).all() and (b["input_ids"][i, n:] == tok.pad_token_id).all()


def test_pack_keeps_examples_and_blocks_cross_attention(tiny):
    _, tok = tiny
    exs = [sft.build_sft_example(tok, c) for c in data.make_sft_conversations(12, "train", seed=6)]
    packed = sft.pack(exs, 128, tok.pad_token_id)
    ids = packed["input_ids"][packed["doc_ids"] >= 0].tolist()
    assert ids == [i for e in exs for i in e["input_ids"]]
    mask = sft.packed_attention_mask(packed["doc_ids"])
    # hand check: token t may attend to s iff s <= t and both belong to the same example
    d = packed["doc_ids"][0]
    for t in range(0, 128, 9):
        for s in range(0, 128, 7):
            assert mask[0, t, s].item() == (s <= t and d[t] == d[s] and d[t] >= 0)
    with pytest.raises(ValueError, match="seq_len"):
        sft.pack(exs, 8, tok.pad_token_id)


def test_task_generators_deterministic_and_disjoint():
    a = data.make_tasks(300, "train", seed=4)
    assert a == data.make_tasks(300, "train", seed=4)
    assert a != data.make_tasks(300, "train", seed=5)
    test = data.make_tasks(300, "test", seed=4)
    assert not {t.prompt for t in a} & {t.prompt for t in test}
    ev = data.make_eval_tasks(7, "test", seed=2)
    assert ev == data.make_eval_tasks(7, "test", seed=2)
    assert [t.family for t in ev] == [f for f in data.TASK_FAMILIES for _ in range(7)]
    assert all(data.task_split(t) == "test" for t in ev)
    assert data.make_sft_conversations(3, seed=1) == [data.task_to_messages(t) for t in data.make_tasks(3, seed=1)]


def test_addition_work_hand_worked():
    assert data.addition_work(257, 439) == "7+9=16 5+3+1=9 2+4=6"
    assert data.addition_work(999, 999) == "9+9=18 9+9+1=19 9+9+1=19"
    assert data.addition_work(5, 7) == "5+7=12 0+0+1=1 0+0=0"
    assert data.addition_work(0, 0) == "0+0=0 0+0=0 0+0=0"
    t = data.Task("addition", "What is 5 + 7?", "12", data.addition_work(5, 7))
    assert t.reply == "5+7=12 0+0+1=1 0+0=0 so 12" and data.final_answer(t.reply) == "12"
    assert data.Task("sort", "p", "1 2").reply == "1 2"  # no work: the reply is the bare answer
    assert data.task_to_messages(t)[1]["content"] == t.reply
    for a, b in [(-1, 5), (1000, 0), (3.0, 4)]:
        with pytest.raises(ValueError, match="a and b must be ints in 0..999"):
            data.addition_work(a, b)


def test_check_answer_accepts_right_rejects_wrong():
    add = data.Task("addition", "What is 12 + 30?", "42")
    assert data.check_answer(add, "42") and data.check_answer(add, " 42\n")
    for wrong in ["43", "42.", "A: 42", "", "4 2", "2+0=2 1+3=4 0+0=0 so 43", "so 42"]:
        assert not data.check_answer(add, wrong)
    assert data.check_answer(add, "2+0=2 1+3=4 0+0=0 so 42") and data.check_answer(add, "anything so 42")  # work not graded
    fmt = data.Task("format", "Write the word cat in capital letters inside brackets.", "[CAT]")
    assert data.check_answer(fmt, "[CAT]") and not data.check_answer(fmt, "[cat]")
    # answers the generators produce are right by construction: check a few by hand
    rng = random.Random(0)
    for _ in range(50):
        t = data.TASK_FAMILIES["addition"](rng)
        a, b = (int(x) for x in t.prompt.removeprefix("What is ").removesuffix("?").split(" + "))
        assert data.check_answer(t, str(a + b))
        t = data.TASK_FAMILIES["sort"](rng)
        nums = [int(x) for x in t.prompt.split(": ")[1].rstrip(".").split()]
        assert data.check_answer(t, " ".join(map(str, sorted(nums))))
    with pytest.raises(TypeError, match="completion"):
        data.check_answer(add, 42)


def test_evaluate_tasks_counts_per_family(tiny):
    model, tok = tiny
    tasks = data.make_eval_tasks(2, "test", seed=1, families=["sort", "format"])
    res = sft.evaluate_tasks(model, tok, tasks, max_new_tokens=12)
    assert set(res.per_family) == {"sort", "format"}
    assert res.correct == [data.check_answer(t, c) for t, c in zip(tasks, res.completions)]
    assert res.overall == sum(res.correct) / 4


def test_bad_inputs_raise_clear_errors(tiny):
    _, tok = tiny
    with pytest.raises(ValueError, match="non-empty"):
        sft.build_sft_example(tok, [])
    with pytest.raises(ValueError, match="no assistant turn"):
        sft.build_sft_example(tok, [{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        sft.build_sft_example(tok, [{"role": "user"}])
    msgs = data.task_to_messages(data.make_tasks(1, seed=0)[0])
    with pytest.raises(ValueError, match="max_length=5 is too small"):
        sft.build_sft_example(tok, msgs, max_length=5)
    with pytest.raises(ValueError, match="max_length"):
        sft.build_sft_example(tok, msgs, max_length=0)
    with pytest.raises(ValueError, match="no labelled token"):
        sft.sft_loss(torch.randn(1, 4, 5), torch.full((1, 4), -100))
    with pytest.raises(ValueError, match="logits must be"):
        sft.sft_loss(torch.randn(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="prompt_format"):
        sft.generate_replies(tiny[0], tok, ["hi"], prompt_format="json")
    with pytest.raises(ValueError, match="n_per_family"):
        data.make_eval_tasks(0)
    with pytest.raises(ValueError, match="instruction"):
        data.alpaca_to_messages({"output": "x"})
    assert data.alpaca_to_messages({"instruction": "Add", "input": "1 2", "output": "3"})[0]["content"] == "Add\n\n1 2"


def test_committed_sft_checkpoint_beats_base(tiny):
    """data/course-tiny-sft loads offline and answers in chat format far better than course-tiny."""
    from course_utils.env import REPO_ROOT

    folder = REPO_ROOT / "data" / "course-tiny-sft"
    if not (folder / "model.safetensors").exists():
        pytest.skip("data/course-tiny-sft not built yet (python -m course_utils.sft)")
    tuned, tok = load_model(str(folder), device="cpu")
    tasks = data.make_eval_tasks(6, "test", seed=11, families=["sort", "count"])
    before = sft.evaluate_tasks(tiny[0], tok, tasks, max_new_tokens=16).overall
    after = sft.evaluate_tasks(tuned, tok, tasks, max_new_tokens=16).overall
    assert after >= before + 0.4, (before, after)


def test_family_helpers_match_hand_counts():
    """correct_by_family / majority_baselines / accuracy_table against counts done by hand on a fixed task list."""
    T = data.Task
    tasks = [T("count", "q1", "1"), T("count", "q2", "1"), T("count", "q3", "0"), T("sort", "q4", "1 2"),
             T("sort", "q5", "3 4")]
    correct = [1, 0, 1, 1, 1]
    assert sft.correct_by_family(tasks, correct) == {"sort": [True, True], "count": [True, False, True]}
    base = sft.majority_baselines(tasks)
    assert base["count"] == ("1", 2 / 3) and base["sort"][1] == 0.5
    res = sft.EvalResult({}, 0.8, [""] * 5, [bool(c) for c in correct])
    table = sft.accuracy_table(tasks, {"run": res}).splitlines()
    assert [line.split()[0] for line in table] == ["family", "sort", "count", "overall"]
    # Wilson 95 % interval of 2/3 by hand: centre (p + z^2/2n) / (1 + z^2/n), z = 1.96
    z, n, p = 1.959964, 3, 2 / 3
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    assert f"0.67 [{centre - half:.2f}, {centre + half:.2f}]" in table[2]
    assert "0.600" in table[3] and "0.80 [" in table[3]  # overall baseline (2 + 1) / 5, accuracy 4/5
    with pytest.raises(ValueError, match="one entry per task"):
        sft.correct_by_family(tasks, [1, 0])
    with pytest.raises(ValueError, match="tasks"):
        sft.majority_baselines([])
    with pytest.raises(ValueError, match=r"results\['run'\]"):
        sft.accuracy_table(tasks, {"run": sft.EvalResult({}, 0.0, [], [])})
    with pytest.raises(ValueError, match="results must be"):
        sft.accuracy_table(tasks, {})


def test_neftune_matches_transformers_hook(tiny):
    from transformers.integrations.neftune import neftune_post_forward_hook

    model, _ = tiny
    emb = model.get_input_embeddings()
    ids = torch.randint(4, 900, (2, 11), generator=torch.Generator().manual_seed(0))
    clean = emb(ids)
    handle = sft.add_neftune(model, 5.0)
    assert torch.equal(emb(ids), clean)  # eval mode: no noise
    emb.train()
    try:
        torch.manual_seed(1)
        ours = emb(ids)
        handle.remove()
        emb.neftune_noise_alpha = 5.0
        handle = emb.register_forward_hook(neftune_post_forward_hook)
        torch.manual_seed(1)
        theirs = emb(ids)
    finally:
        handle.remove()
        emb.eval()
        emb.__dict__.pop("neftune_noise_alpha", None)
    assert torch.equal(ours, theirs)
    noise = (ours - clean).abs()
    assert 0 < noise.max() <= 5.0 / (11 * clean.shape[-1]) ** 0.5
    with pytest.raises(ValueError, match="alpha"):
        sft.add_neftune(model, 0)


def test_plot_loss_history_draws_the_moving_average_of_the_callback_rows():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_utils import plotting

    rows = [{"step": s, "loss": loss, "lr": 1e-3} for s, loss in enumerate([9.0, 6.0, 3.0, 3.0, 0.0], start=1)]
    fig, ax = plotting.plot_loss_history(rows)
    assert list(ax.lines[0].get_ydata()) == [6.0, 4.0, 2.0]  # (9+6+3)/3, (6+3+3)/3, (3+3+0)/3
    plt.close(fig)
    live = plotting.live_history(every=2, last=5, plot=plotting.plot_loss_history, unit="step")
    for row in rows:
        live(row)  # outside IPython: each frame drawn and closed
    assert plt.get_fignums() == []
