"""The MT10 task names, their action-category labels and their instruction paraphrases.

Pure data and lookups: no MuJoCo, so data loaders and the policy side can import it cheaply.

Task names are the short MT10 names (`reach`, `pick-place`); Meta-World's own names (`reach-v3`,
also `-v2`) are accepted wherever a task is named, and `check_task` turns them into the short one.

Action categories are ConLA's action-category prior: the label an action-free clip keeps, like
Something-Something v2's templates ("Pushing something from left to right"). Each task gets its
own verb phrase (10 labels for 10 tasks) rather than a shared coarse verb ("open" for door, drawer
and window): the three "open" motions are physically different (swing a hinged door by its handle,
pull a drawer out, slide a window sideways), and a prior that merged them would tell the latent
action model that unlike motions are alike. The phrases name the motion, never the object, as
SSv2's "something" does.

Instructions: every task has seven paraphrases; five are for training data and two are held out
for evaluation, so closed-loop success also measures whether a policy follows wording it has
never seen.
"""

from __future__ import annotations

import difflib
from typing import Literal

import numpy as np

__all__ = [
    "ACTION_CATEGORY",
    "METAWORLD_SUFFIXES",
    "MT10_TASKS",
    "check_task",
    "instructions",
    "sample_instruction",
]

MT10_TASKS: tuple[str, ...] = (
    "reach",
    "push",
    "pick-place",
    "door-open",
    "drawer-open",
    "drawer-close",
    "button-press-topdown",
    "peg-insert-side",
    "window-open",
    "window-close",
)

# Meta-World's own task names are the short names plus a version suffix (`reach-v3`); check_task drops it.
METAWORLD_SUFFIXES: tuple[str, ...] = ("-v2", "-v3")

ACTION_CATEGORY: dict[str, str] = {
    "reach": "reach",
    "push": "push",
    "pick-place": "pick and place",
    "door-open": "swing open",
    "drawer-open": "pull out",
    "drawer-close": "push in",
    "button-press-topdown": "press down",
    "peg-insert-side": "insert",
    "window-open": "slide open",
    "window-close": "slide closed",
}

# (training paraphrases, held-out paraphrases) per task.
_INSTRUCTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "reach": (
        (
            "reach to the goal position",
            "move the gripper to the target",
            "reach the red goal",
            "put your hand at the target location",
            "go to the goal",
        ),
        ("bring the end effector to the marked spot", "stretch out and touch the target point"),
    ),
    "push": (
        (
            "push the puck to the goal",
            "slide the puck over to the target",
            "push the block to the goal position",
            "nudge the object along the table to the target",
            "shove the puck onto the goal",
        ),
        ("move the puck to the target without lifting it", "push the object across to the marked spot"),
    ),
    "pick-place": (
        (
            "pick up the puck and place it at the goal",
            "grab the object and put it on the target",
            "lift the puck and move it to the goal",
            "pick the block up and set it down at the target",
            "pick and place the object at the goal position",
        ),
        ("take the puck and drop it off at the goal", "grasp the object, carry it and place it on the target"),
    ),
    "door-open": (
        (
            "open the door",
            "pull the door open",
            "swing the door open by its handle",
            "open the door all the way",
            "grab the handle and open the door",
        ),
        ("swing the cabinet door wide open", "pull on the door handle until the door is open"),
    ),
    "drawer-open": (
        (
            "open the drawer",
            "pull the drawer out",
            "pull the drawer open by its handle",
            "slide the drawer open",
            "open the drawer all the way",
        ),
        ("draw the drawer out towards you", "grab the drawer handle and pull it open"),
    ),
    "drawer-close": (
        (
            "close the drawer",
            "push the drawer shut",
            "slide the drawer closed",
            "push the drawer back in",
            "shut the drawer",
        ),
        ("push the open drawer all the way in", "close the drawer by pushing on its front"),
    ),
    "button-press-topdown": (
        (
            "press the button",
            "push the button down",
            "press the button from the top",
            "push down on the button",
            "press the button all the way down",
        ),
        ("hit the button from above", "press down on the top of the button"),
    ),
    "peg-insert-side": (
        (
            "insert the peg into the hole",
            "put the peg in the hole on the side",
            "pick up the peg and insert it sideways",
            "slide the peg into the hole",
            "insert the peg into the box from the side",
        ),
        ("grab the peg and push it into the side hole", "fit the peg into the opening"),
    ),
    "window-open": (
        (
            "open the window",
            "slide the window open",
            "push the window open sideways",
            "slide the window to open it",
            "open the sliding window",
        ),
        ("move the window pane aside to open it", "slide the window all the way open"),
    ),
    "window-close": (
        (
            "close the window",
            "slide the window closed",
            "push the window shut sideways",
            "slide the window to close it",
            "close the sliding window",
        ),
        ("move the window pane back to close it", "slide the window all the way shut"),
    ),
}


def check_task(task: str) -> str:
    """The MT10 short name of `task`: `reach` as it is, Meta-World's `reach-v3` (or `reach-v2`) as `reach`.

    Anything else raises ValueError naming the value and listing the valid tasks, the closest match
    first, so a typo's fix is the first word read.
    """
    name = task
    if isinstance(task, str) and task.endswith(METAWORLD_SUFFIXES):
        name = task.rsplit("-", 1)[0]
    if name in _INSTRUCTIONS:
        return name
    close = difflib.get_close_matches(str(name), MT10_TASKS, n=len(MT10_TASKS), cutoff=0.0)
    likely = difflib.get_close_matches(str(name), MT10_TASKS, n=1, cutoff=0.6)
    hint = f" (did you mean {likely[0]!r}?)" if likely else ""
    raise ValueError(f"unknown task {task!r}{hint}; valid tasks: {', '.join(close)} "
                     f"(or Meta-World's names, e.g. 'reach-v3')")


def instructions(task: str, split: Literal["train", "heldout"] = "train") -> tuple[str, ...]:
    """The instruction paraphrases of `task` in `split` ("train" for data, "heldout" for evaluation)."""
    train, heldout = _INSTRUCTIONS[check_task(task)]
    if split == "train":
        return train
    if split == "heldout":
        return heldout
    raise ValueError(f"unknown split {split!r}; valid splits: 'train', 'heldout'")


def sample_instruction(
    task: str, rng: np.random.Generator, split: Literal["train", "heldout"] = "train"
) -> str:
    """One paraphrase of `task` from `split`, drawn with `rng` (so a seeded episode gets a fixed one)."""
    options = instructions(task, split)
    return options[int(rng.integers(len(options)))]
