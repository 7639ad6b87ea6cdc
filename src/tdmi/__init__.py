"""tdmi: an open implementation of TDMI (Feng et al., CVPR 2023).

"Mutual Information-Based Temporal Difference Learning for Human Pose Estimation in Video".
The package follows the paper's figure: ``models.hrnet`` (backbone), ``models.tde`` (Temporal
Difference Encoder), ``models.rdm`` (Representation Disentanglement Module), ``models.tdmi`` (assembly
and heatmap head) and ``models.mi_loss`` (the mutual-information objective).
"""

__version__ = "0.1.0"
