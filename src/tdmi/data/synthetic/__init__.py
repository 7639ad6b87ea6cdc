"""SynthTrack: procedural multi-person videos written in the PoseTrack18 layout.

SynthTrack stands in for PoseTrack on machines without the dataset: the tests, ``tdmi demo`` and the proof that
temporal modelling beats a single-frame HRNet all run on it. Every sequence is rendered from a small scene model:

- People are articulated 3D stick bodies with human proportions (head ~1/7.5 of the height, legs ~0.52) seen by an
  orthographic camera after a rotation about the vertical axis (the heading). Limbs are tapered capsules with
  cylinder-like shading, the torso a shaded polygon, the head an ellipse with hair and a face on the side it
  faces. Parts are painted far to near, so a turning person swaps which arm and leg is in front.
- Motion: walking and running gaits (thigh swing, knee flexion, opposite arm swing, ground contact gives the
  bob), turns (heading passes through the front or the back view and the walking direction reverses), people
  turning on the spot, and arm waves. Depth follows a ground-plane perspective: feet lower in the frame = nearer
  = taller.
- What temporal modelling must overcome: fast movers with motion blur (a blurred frame is the average of
  sub-frame renders spread over the exposure time), occlusion by moving boxes and poles and by other people,
  nearby distracting people, camera shake (the whole frame jitters, with occasional jerks), and a distant
  crowd that is not annotated and lies under an ignore polygon, as in PoseTrack.
- Backgrounds: value noise, stripes, tiles and bricks, gradients, static props (trees, windows, lamp posts).

Files (``docs/facts/posetrack-facts.md`` sections 1-2; every key of the real PoseTrack18 files is written, including
the mmpose copies' ``width``, ``height`` and ``mask_file``)::

    <out>/images/<split>/<seq>/%06d.jpg           every frame
    <out>/mask/<split>/<seq>/%06d.jpg             ignore-region masks (255 inside an ignore polygon)
    <out>/annotations/<split>/<seq>.json          per-sequence ground truth (images, annotations, categories)
    <out>/detections/<split>_boxes.json           noisy person boxes, COCO detection-result format
    <out>/synthtrack_<split>.json                 generation record (seed, options, counts)

Naming and ids: sequence ``i`` (0-based) is ``"%06d_bonn_<split>" % (i + 1)``; the token ``bonn`` gives T = 2
in the PoseTrack18 image-id formula id = T*10^10 + S*10^4 + F (facts 2.3), so frame F of sequence S has id
``20000000000 + S*10000 + F`` (F < 10^4). ``frame_id`` equals ``id``; annotation ``id`` = image id*100 + index
of the person in that frame.

Labelling rules (documented choices):

- Labelled frames follow PoseTrack18 val: a dense stretch of ``min(dense_labeled_frames, ceil(nframes/2))``
  central frames plus every ``labeled_every``-th frame (index % 4 == 0) elsewhere (:func:`labeled_frame_mask`).
  Only labelled frames carry annotations; ``images`` always lists all ``nframes`` frames.
- Flags are 0/1 only (as PT18). The ears (slots 3, 4) are always (0, 0, 0). A joint outside the image
  (x < 0, y < 0, x > W-1 or y > H-1) is (0, 0, 0). A joint hidden behind an object or another person keeps
  flag 1 (PoseTrack annotators label occluded joints they can infer) unless the person is mostly hidden:
  when fewer than half of the person's in-image joints are visible, its hidden joints become (0, 0, 0).
  A person is annotated in a frame only with at least 2 labelled joints. Crowd people are never annotated.
- ``bbox`` = labelled-keypoint extent enlarged 1.3x about its centre (exactly the PT18 rule, facts 2.1);
  ``bbox_head`` = integer box around the head ellipse; ``iscrowd`` is ``false`` and ``scores`` is ``[]`` as in
  the real files.

Extra keys (readers ignore unknown keys; poseval does too):

- ``images[i]["synthtrack"]``: per-frame difficulty tags ``{"motion_blur": bool, "blur_px": float,
  "camera_shake": [dx, dy], "occluded": bool, "hidden_joints": int, "object_occlusion": bool,
  "person_occlusion": bool}``. ``blur_px`` is the largest image displacement of an annotated joint (or of the
  camera) during the exposure; ``motion_blur`` is ``blur_px >= 3``. ``hidden_joints`` counts in-image joints of
  annotated people covered by an object or another person.
- ``annotations[k]["synthtrack"]``: ``{"visible": [17 x 0/1], "action": str, "blur_px": float,
  "hidden_joints": int, "speed": float, "distractor_in_crop": bool}``: visible = inside the image and not covered by
  anything else; the rest is the person's own difficulty on that frame (its joints' largest displacement during
  the exposure, its covered in-image joints, its mean joint speed in % of its height per frame without camera
  motion, and whether another person has at least 3 joints inside its crop).
- top level ``"synthtrack"``: the sequence's scene summary (seed, people and their actions, occluders, crowd,
  exposure, shake amplitude).

Versions (``SynthOptions.version``): 2 (the default) draws every entity from its own random stream, so one element
can be toggled without changing the others; :func:`generate_counterfactual` (``tdmi synth --counterfactual``) writes
paired sets of the same scenes: one key person alone before a still background, the same plus an unannotated person
walking through its crop, and the same with a panning, moving background, labelled alike. Version 1 (one stream)
still renders the frames of the sets made before (``tdmi synth --generator-version 1``).

Python API: :func:`generate_synthtrack` writes a set and returns a :class:`SynthSummary`; :func:`render_clip`
renders one sequence in memory (``images [T, H, W, 3]`` uint8 BGR, ``keypoints [T, P, 17, 3]``) without
touching the disk; :class:`SynthOptions` holds the difficulty knobs. Output is deterministic per seed (same
seed, options and size: byte-identical JSON and images).

The package, in the order data flows: ``options`` (knobs, constants, naming), ``scene`` (people, occluders,
backgrounds), ``poses`` (bodies at time t), ``drawing`` (rasterising one instant), ``frames`` (blur, visibility,
labels; ``render_clip``), ``writer`` (files on disk; ``tdmi synth``).
"""

from tdmi.data.synthetic.frames import render_clip
from tdmi.data.synthetic.options import (DEFAULT_SIZE, SEQUENCE_TOKEN, SEQUENCE_TOKEN_ID, SYNTHTRACK_VERSION, SynthClip,
                                         SynthOptions, SynthSummary, categories, image_id, labeled_frame_mask,
                                         pt18_bbox, sequence_name)
from tdmi.data.synthetic.writer import generate_counterfactual, generate_synthtrack, synth_command

__all__ = ["DEFAULT_SIZE", "SEQUENCE_TOKEN", "SEQUENCE_TOKEN_ID", "SYNTHTRACK_VERSION", "SynthClip", "SynthOptions",
           "SynthSummary", "categories", "generate_counterfactual", "generate_synthtrack", "image_id",
           "labeled_frame_mask", "pt18_bbox", "render_clip", "sequence_name", "synth_command"]
