"""Fine-tuning generators on frames from the user's own footage.

``vhsup extract`` turns videos into a folder of training frames;
``vhsup train`` fine-tunes a registered generator on them. The pieces:

    extract      videos -> diverse, deinterlaced, square-pixel 8-bit PNGs
    data         frame folders -> HR patches (or LR/HR pairs), validation pairs
    degrade/     HR -> LR on the fly (Real-ESRGAN second order + VHS/DVD)
    losses       pixel, perceptual (VGG19 / ResNet-18), GAN, translational
    trainer      the loop: stages, validation, export, progress, stopping on a signal
      start        the starting generator, and the config settled on it
      switched     --switched: plain convs of the start turned into switched ones
      nets         G, its EMA, D, optimisers and loss scalers on the device
      recompute    activation recompute (--checkpointing) of the generator's blocks
      steps        one optimiser step: G step, D step, skip and restore, AMP
      state        what a checkpoint saves and a resume restores
      distributed  torchrun processes (DDP), and the device each uses
    checkpoint   checkpoint files (safetensors): write, read, list, prune
    validate     PSNR-Y / SSIM on held-out frames, grids, metrics log
    card         the model card written beside best.safetensors
"""
