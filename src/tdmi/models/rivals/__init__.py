"""The methods TDMI is compared with, each in one file written the way the TDMI files are (``model.arch``):
``dcpose`` (Liu et al., CVPR 2021). Every deformable convolution is tdmi's own DCNv2, so they run on CPU and GPU
with no build step; every one shares TDMI's encode / decode contract, trainer, tester and inference."""
