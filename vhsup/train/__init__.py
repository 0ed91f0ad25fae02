"""Fine-tuning generators on frames from the user's own footage.

``vhsup extract`` turns videos into a folder of training frames;
``vhsup train`` fine-tunes a registered generator on them. The pieces:

    extract      videos -> diverse, deinterlaced, square-pixel 8-bit PNGs
    data         frame folders -> HR patches (or LR/HR pairs)
    degrade/     HR -> LR on the fly (Real-ESRGAN second order + VHS/DVD)
    losses       pixel, perceptual (VGG19 / ResNet-18), GAN, translational
    trainer      the loop: stages, EMA, AMP, accumulation, checkpoints, DDP
    validate     PSNR-Y / SSIM on held-out frames, grids, metrics log
    card         the model card written beside best.safetensors
"""
