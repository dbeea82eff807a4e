"""A 3D-aware StyleGAN full-head prior (PanoHead-style tri-grid EG3D generator), plain torch.

ops.py        upfirdn2d, bias_act, modulated convolution (StyleGAN2 / EG3D papers)
generator.py  mapping network, tri-plane synthesis, volume renderer, super-resolution
"""
