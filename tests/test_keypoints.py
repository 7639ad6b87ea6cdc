from tdmi.keypoints import (
    HIEVE14, HIEVE14_TO_POSETRACK17, POSETRACK17, POSETRACK17_TO_POSEVAL15, POSEVAL15, POSEVAL15_TO_POSETRACK17,
    POSEVAL_GROUPS, joint_set,
)


def test_posetrack17_facts():
    assert POSETRACK17.num_joints == 17
    assert POSETRACK17.names[1:3] == ("head_bottom", "head_top")
    perm = POSETRACK17.flip_permutation()
    assert perm[1] == 1 and perm[2] == 2  # head joints are not a pair
    assert perm[5] == 6 and perm[16] == 15
    assert [perm[p] for p in perm] == list(range(17))


def test_17_to_15_map_is_name_preserving():
    for slot, pv in enumerate(POSETRACK17_TO_POSEVAL15):
        if pv < 0:
            assert "ear" in POSETRACK17.names[slot]
        else:
            assert POSEVAL15.names[pv] == POSETRACK17.names[slot]
    assert sorted(POSEVAL15_TO_POSETRACK17) == [0, 1, 2] + list(range(5, 17))


def test_groups_cover_15_joints_once():
    ids = sorted(i for g in POSEVAL_GROUPS.values() for i in g)
    assert ids == list(range(15))


def test_hieve_map():
    assert HIEVE14.num_joints == 14 == len(HIEVE14_TO_POSETRACK17)
    for h, p in enumerate(HIEVE14_TO_POSETRACK17):
        name = HIEVE14.names[h]
        if name != "chest":
            assert POSETRACK17.names[p] == name
    assert joint_set("hieve14") is HIEVE14
