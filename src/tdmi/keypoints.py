"""Joint sets: PoseTrack's 17-slot order, poseval's 15-joint order, HiEve's 14 joints, and the maps between them.

Facts and sources: ``docs/facts/posetrack-facts.md`` section 1 and ``user-needs.md`` section 2.

- The model always predicts the 17-slot "PoseTrack-COCO" order (``POSETRACK17``): COCO's layout with
  head_bottom / head_top in COCO's eye slots (1, 2). The ear slots (3, 4) are never annotated in PoseTrack
  (their target weight is 0) and never scored by poseval, but they stay so that COCO-pretrained HRNet heads
  load unchanged.
- poseval scores 15 joints in its own order (``POSEVAL15``); ``POSETRACK17_TO_POSEVAL15[i]`` is the poseval id
  of slot ``i`` (or -1 for the ears).
- HiEve has 14 joints (``HIEVE14``) with a chest and no head top/bottom; ``HIEVE14_TO_POSETRACK17`` documents
  the correspondence we use (see the table in :data:`HIEVE14_TO_POSETRACK17`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JointSet:
    """A named list of joints with its left/right pairs and drawing skeleton.

    Attributes:
        name: short identifier (``posetrack17``, ``poseval15``, ``hieve14``).
        names: joint names in index order.
        flip_pairs: 0-based (left, right) index pairs swapped by a horizontal flip.
        skeleton: 0-based (a, b) index pairs drawn as limbs.
        upper_body: indices used by half-body augmentation as the upper body.
    """

    name: str
    names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton: tuple[tuple[int, int], ...]
    upper_body: tuple[int, ...] = ()

    @property
    def num_joints(self) -> int:
        return len(self.names)

    @property
    def lower_body(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_joints) if i not in self.upper_body)

    def flip_permutation(self) -> list[int]:
        """Index permutation ``perm`` such that ``joints_flipped = joints[perm]`` swaps every left/right pair."""
        perm = list(range(self.num_joints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def index(self, joint_name: str) -> int:
        try:
            return self.names.index(joint_name)
        except ValueError:
            raise KeyError(f"joint {joint_name!r} is not in joint set {self.name!r}; known: {', '.join(self.names)}")


POSETRACK17 = JointSet(
    name="posetrack17",
    names=(
        "nose", "head_bottom", "head_top", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    # Slots 1 and 2 (head_bottom, head_top) are NOT a pair, unlike COCO's eyes.
    flip_pairs=((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # The GT files' `categories[0].skeleton`, converted from 1-based to 0-based.
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
        (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    upper_body=tuple(range(11)),
)
"""The 17-slot order of PoseTrack18/21 files and of every tdmi model output."""

#: Skeleton used for drawing: the GT skeleton links the (never annotated) ears; this one links the head
#: joints to the shoulders instead, so rendered PoseTrack poses have no dangling limbs.
POSETRACK17_DRAW_SKELETON: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 5), (1, 6), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10),
    (5, 11), (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
)

POSEVAL15 = JointSet(
    name="poseval15",
    names=(
        "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
        "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
        "head_bottom", "nose", "head_top",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9)),
    skeleton=((0, 1), (1, 2), (3, 4), (4, 5), (2, 3), (6, 7), (7, 8), (9, 10), (10, 11), (8, 9), (12, 13), (12, 14)),
    upper_body=tuple(range(6, 15)),
)
"""poseval's 15-joint order (PoseTrack17 ids). poseval prints id 12 as "neck"; it is head_bottom."""

#: poseval id of each 17-slot joint; -1 for the ears, which poseval never scores.
POSETRACK17_TO_POSEVAL15: tuple[int, ...] = (13, 12, 14, -1, -1, 9, 8, 10, 7, 11, 6, 3, 2, 4, 1, 5, 0)

#: 17-slot index of each poseval joint (inverse of :data:`POSETRACK17_TO_POSEVAL15`).
POSEVAL15_TO_POSETRACK17: tuple[int, ...] = tuple(
    POSETRACK17_TO_POSEVAL15.index(k) for k in range(POSEVAL15.num_joints)
)

#: poseval's joint groups (poseval ids) as printed in the paper's tables. Mean = mean of the 15 joint APs,
#: which weights Head 3/15 and every other group 2/15 (it is NOT the mean of the 7 groups).
POSEVAL_GROUPS: dict[str, tuple[int, ...]] = {
    "Head": (14, 12, 13),
    "Shoulder": (8, 9),
    "Elbow": (7, 10),
    "Wrist": (6, 11),
    "Hip": (2, 3),
    "Knee": (1, 4),
    "Ankle": (0, 5),
}

HIEVE14 = JointSet(
    name="hieve14",
    names=(
        "nose", "chest", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
        "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    ),
    flip_pairs=((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13)),
    skeleton=((0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
              (12, 13)),
    upper_body=tuple(range(8)),
)
"""HiEve's 14 joints, in the order of its annotation files (humaninevents.org/format.html)."""

#: 17-slot PoseTrack index for each HiEve joint. Limbs and the nose correspond one to one. HiEve's "chest"
#: has no PoseTrack joint: it is mapped to head_bottom (slot 1), the closest annotated point on the neck
#: line, so a PoseTrack-trained model fills it; HiEve exports take the mid-shoulder point instead when the
#: caller asks for it (see ``data/hieve.py``). PoseTrack's head_top and ears have no HiEve counterpart.
HIEVE14_TO_POSETRACK17: tuple[int, ...] = (0, 1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15)

JOINT_SETS: dict[str, JointSet] = {js.name: js for js in (POSETRACK17, POSEVAL15, HIEVE14)}


def joint_set(name: str) -> JointSet:
    """Look a joint set up by name, with an error that lists the valid names."""
    try:
        return JOINT_SETS[name]
    except KeyError:
        raise KeyError(f"unknown joint set {name!r}; choose one of: {', '.join(JOINT_SETS)}") from None
