"""A 3D-aware StyleGAN full-head prior (PanoHead-style tri-grid EG3D generator), plain torch.

ops.py        upfirdn2d, bias_act, modulated convolution (StyleGAN2 / EG3D papers)
layers.py     equalised-lr fully connected, mapping network, StyleGAN2 synthesis layers / blocks
volume.py     tri-plane / tri-grid sampling, decoder, camera rays, compositing, importance sampling
generator.py  GanConfig (panohead / tiny), TriplaneGenerator (planes -> render -> super-resolution)
checkpoint.py EG3D / PanoHead training pickles read as data (restricted unpickler, nothing runs)
convert.py    checkpoint -> safetensors (`avatar weights convert panohead --from FILE.pkl`), load_generator
camera.py     gan_camera (EG3D convention), gan_view: the FLAME fit's photo camera through the crop
align.py      the GAN's aligned crop from 68 landmarks (5-point scale + translation), uncrop
invert.py     W-space inversion + PTI on a masked L2, the inversion safetensors artifact
"""
