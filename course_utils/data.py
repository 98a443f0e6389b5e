"""Course data made by code: a story corpus for pretraining and synthetic tasks with checkable answers.

Everything here is generated from a seed, so nothing is copied from elsewhere (see data/README.md).
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Callable

from .checks import check_int

NAMES = ["Tom", "Mia", "Ben", "Lily", "Sam", "Anna", "Max", "Zoe", "Leo", "Emma", "Jack", "Lucy", "Noah", "Ella", "Finn", "Rosa"]
ANIMALS = ["cat", "dog", "bird", "fox", "rabbit", "bear", "duck", "frog", "mouse", "owl", "horse", "fish"]
PLACES = ["the park", "the forest", "the river", "the garden", "the beach", "the school", "the town", "the farm", "the hill", "the lake"]
OBJECTS = ["ball", "box", "boat", "kite", "book", "hat", "cake", "flower", "stone", "shell", "key", "cup", "drum", "map"]
COLOURS = ["red", "blue", "green", "yellow", "big", "small", "shiny", "old", "soft", "little"]
FEELINGS = ["happy", "sad", "tired", "excited", "scared", "proud", "angry", "calm", "hungry", "sleepy"]
ACTIVITIES = ["play with a ball", "read a book", "sing a song", "run in the grass", "swim in the water",
              "draw a picture", "climb a tree", "look at the stars", "bake a cake", "fly a kite"]
FRIENDS = ["a friend", "a kind bird", "an old man", "a little girl", "a big dog", "a wise owl", "a small boy", "a funny frog"]
WEATHER = ["The sun was warm.", "It was a rainy day.", "The wind was cold.", "The sky was blue and clear.", "It was a snowy morning."]
WORDS = sorted(set(ANIMALS + OBJECTS + FEELINGS + ["apple", "tree", "house", "water", "light", "music", "night", "green",
                                                   "river", "cloud", "bread", "chair", "table", "paper", "smile", "train"]))
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _a(word: str) -> str:
    """'a box', 'an old box'."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _pronoun(name: str) -> tuple[str, str]:
    girls = {"Mia", "Lily", "Anna", "Zoe", "Emma", "Lucy", "Ella", "Rosa"}
    return ("she", "her") if name in girls else ("he", "his")


def make_story(rng: random.Random) -> str:
    """One short children's story from templates, with one hero throughout."""
    name, animal, place, place2 = rng.choice(NAMES), rng.choice(ANIMALS), rng.choice(PLACES), rng.choice(PLACES)
    obj, colour, friend = rng.choice(OBJECTS), rng.choice(COLOURS), rng.choice(FRIENDS)
    he, his = _pronoun(name)
    feel1, feel2 = rng.sample(FEELINGS, 2)
    activity = rng.choice(ACTIVITIES)
    opening = rng.choice([
        f"Once upon a time, there was {_a(rng.choice(COLOURS))} {animal} named {name}.",
        f"One day, {_a(animal)} named {name} went to {place}.",
        f"{name} was {_a(rng.choice(COLOURS))} {animal} who lived near {place}.",
    ])
    middle = [
        rng.choice(WEATHER),
        f"Every day, {name} liked to {activity}.",
        f"One morning, {name} found {_a(colour)} {obj} near {place2}.",
        rng.choice([f'"What is this?" {name} asked.', f'"Look at this {obj}!" said {name}.',
                    f"{name} picked up the {obj} and smiled."]),
        f"{he.capitalize()} felt {feel1}.",
        rng.choice([f"Then {name} met {friend}.", f"Soon {friend} came to {place2}.", f"Later, {name} saw {friend}."]),
        rng.choice([f'"Can I play with your {obj}?" asked the {friend.split()[-1]}.',
                    f'"Let us share the {obj}," said {name}.', f"They played with the {obj} all day."]),
    ]
    ending = rng.choice([
        f"At the end of the day, {name} went home and felt {feel2}.",
        f"{name} gave the {obj} to {his} friend, and they were both {feel2}.",
        f"From that day on, {name} and {his} new friend played together at {place}.",
    ])
    return " ".join([opening] + middle[: rng.randint(4, len(middle))] + [ending])


# ---- tasks with checkable answers -------------------------------------------------------------

ANSWER_MARKER = " so "  # a reply that shows its work ends "<work> so <answer>"


@dataclass(frozen=True)
class Task:
    """One task: a user prompt, the exact answer, its family name, and optional worked steps shown before the answer."""

    family: str
    prompt: str
    answer: str
    work: str = ""  # "" = the reply is the bare answer

    @property
    def reply(self) -> str:
        """The assistant reply SFT teaches: '<work> so <answer>', or the bare answer when there is no work."""
        return f"{self.work}{ANSWER_MARKER}{self.answer}" if self.work else self.answer


def addition_work(a: int, b: int) -> str:
    """Column-by-column working, ones first, carries written out: (257, 439) -> '7+9=16 5+3+1=9 2+4=6'.

    Both numbers are read as three digits (zero-padded), so every problem has the same three steps. A 4-layer
    model cannot add 3-digit numbers in one go, but each of these steps is a one-digit lookup it can learn
    ("show your work", Nye et al. 2021, arXiv:2112.00114).
    """
    if not (isinstance(a, int) and isinstance(b, int) and 0 <= a <= 999 and 0 <= b <= 999):
        raise ValueError(f"a and b must be ints in 0..999, got {a!r} and {b!r}")
    steps, carry = [], 0
    for x, y in zip(f"{a:03d}"[::-1], f"{b:03d}"[::-1]):
        total = int(x) + int(y) + carry
        steps.append(f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={total}")
        carry = total // 10
    return " ".join(steps)


def _addition(rng: random.Random) -> Task:
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    return Task("addition", f"What is {a} + {b}?", str(a + b), addition_work(a, b))


def _reverse(rng: random.Random) -> Task:
    word = rng.choice(WORDS)
    return Task("reverse", f"Reverse the word {word}.", word[::-1])


def _sort(rng: random.Random) -> Task:
    nums = [rng.randint(0, 99) for _ in range(rng.randint(3, 5))]
    return Task("sort", "Sort these numbers: " + " ".join(map(str, nums)) + ".", " ".join(map(str, sorted(nums))))


COUNT_ANSWERS = ("0", "1", "2", "3+")  # answer buckets drawn with equal probability (3+ holds 3 and 4)


def _count(rng: random.Random) -> Task:
    """Count a letter in one or two words; the answer is drawn uniformly from COUNT_ANSWERS first.

    Drawing the answer first keeps the family honest: in single words most letters appear once, so a model that
    always says "1" would score about 70% (the majority-answer baseline every accuracy is shown against).
    """
    bucket = rng.choice(COUNT_ANSWERS)
    for _ in range(10_000):
        text = " ".join(rng.sample(WORDS, rng.randint(1, 2)))
        letter = rng.choice(sorted(set(text) - {" "}) + ["a", "e", "o", "u"])
        n = text.count(letter)
        if str(n) == bucket or (bucket == "3+" and n >= 3):
            return Task("count", f"How many times does the letter {letter} appear in {text}?", str(n))
    raise RuntimeError(f"no count task with answer {bucket} found")  # unreachable with the course word list


def _format(rng: random.Random) -> Task:
    word = rng.choice(WORDS)
    return Task("format", f"Write the word {word} in capital letters inside brackets.", f"[{word.upper()}]")


TASK_FAMILIES: dict[str, Callable[[random.Random], Task]] = {
    "addition": _addition,
    "reverse": _reverse,
    "sort": _sort,
    "count": _count,
    "format": _format,
}


def task_split(task: Task) -> str:
    """'test' for about one prompt in five (decided by a hash of the prompt), else 'train'."""
    return "test" if zlib.crc32(task.prompt.encode()) % 5 == 0 else "train"


def make_tasks(n: int, split: str = "train", *, seed: int = 0, families: list[str] | None = None) -> list[Task]:
    """`n` tasks from the given split; train and test never share a prompt."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    check_int("n", n, 0)
    families = list(TASK_FAMILIES) if families is None else families
    unknown = [f for f in families if f not in TASK_FAMILIES]
    if unknown or not families:
        raise ValueError(f"families must be a non-empty subset of {list(TASK_FAMILIES)}, got {families!r}")
    rng, tasks = random.Random(seed), []
    for _ in range(200 * n + 1000):
        if len(tasks) == n:
            break
        task = TASK_FAMILIES[rng.choice(families)](rng)
        if task_split(task) == split:
            tasks.append(task)
    return tasks


def spelling_text(word: str) -> str:
    """'The word cat is spelled c a t.' (teaches the letters inside each BPE token)."""
    return f"The word {word} is spelled {' '.join(word)}."


def task_as_text(task: Task, rng: random.Random) -> str:
    """A task written as plain prose for pretraining, bare answer without work (not in chat format: SFT teaches that)."""
    return rng.choice([f"Question: {task.prompt} Answer: {task.answer}.",
                       f"Q: {task.prompt}\nA: {task.answer}"])


def pretraining_corpus(n_documents: int, *, seed: int = 0, task_fraction: float = 0.35) -> list[str]:
    """Documents for pretraining course-tiny: stories plus tasks in prose (train split only)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_documents):
        r = rng.random()
        if r < 0.05:
            docs.append(spelling_text(rng.choice(WORDS)))
        elif r < task_fraction:
            task = TASK_FAMILIES[rng.choice(list(TASK_FAMILIES))](rng)
            while task_split(task) != "train":
                task = TASK_FAMILIES[task.family](rng)
            docs.append(task_as_text(task, rng))
        else:
            docs.append(make_story(rng))
    return docs


# ---- chat-format instruction data for SFT (lab 07) ---------------------------------------------

def task_to_messages(task: Task, *, with_answer: bool = True) -> list[dict[str, str]]:
    """A task as chat messages: [user prompt, assistant reply (task.reply)] (just the user turn if with_answer=False)."""
    if not isinstance(task, Task):
        raise TypeError(f"task must be a data.Task, got {type(task).__name__}")
    messages = [{"role": "user", "content": task.prompt}]
    if with_answer:
        messages.append({"role": "assistant", "content": task.reply})
    return messages


def make_sft_conversations(n: int, split: str = "train", *, seed: int = 0,
                           families: list[str] | None = None) -> list[list[dict[str, str]]]:
    """`n` single-turn conversations (user task, assistant answer) from the given split."""
    return [task_to_messages(t) for t in make_tasks(n, split, seed=seed, families=families)]


def make_eval_tasks(n_per_family: int, split: str = "test", *, seed: int = 1,
                    families: list[str] | None = None) -> list[Task]:
    """`n_per_family` tasks of every family (same count each, for per-family accuracy), family by family."""
    check_int("n_per_family", n_per_family)
    families = list(TASK_FAMILIES) if families is None else families
    return [t for i, fam in enumerate(families) for t in make_tasks(n_per_family, split, seed=seed + 1000 * i,
                                                                     families=[fam])]


def final_answer(reply: str) -> str:
    """The answer a reply ends with: the text after its last ' so ' ('7+9=16 ... so 696' -> '696'), else the whole
    reply; stripped of surrounding whitespace."""
    if not isinstance(reply, str):
        raise TypeError(f"reply must be a str, got {type(reply).__name__}")
    return reply.strip().rpartition(ANSWER_MARKER)[2].strip()


def check_answer(task: Task, completion: str) -> bool:
    """Exact match of the final answer: final_answer(completion) equals the task's answer (the work is not graded)."""
    if not isinstance(task, Task):
        raise TypeError(f"task must be a data.Task, got {type(task).__name__}")
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a str, got {type(completion).__name__}")
    return final_answer(completion) == task.answer


def alpaca_to_messages(row: dict) -> list[dict[str, str]]:
    """An Alpaca-style record {instruction, input, output} as [user, assistant] messages (for hub datasets on a GPU)."""
    missing = [k for k in ("instruction", "output") if k not in row]
    if missing:
        raise ValueError(f"row must have keys 'instruction' and 'output' (and optionally 'input'), missing {missing}")
    prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}]
