"""``vhsup eval``: a VHS/DVD benchmark with ground truth, and the scores it reports.

The benchmark renders clean progressive clips whose motion is known
(:mod:`vhsup.eval.scenes`), degrades them the way a tape or a disc would and
encodes them at SD (:mod:`vhsup.eval.tape`), runs the real pipeline on them,
and scores each output against its truth with :mod:`vhsup.eval.metrics`:
fidelity per frame (PSNR-Y, SSIM-Y, HaarPSI) and steadiness over time
(flicker as a ratio of warp errors under the known motion, and tOF). Every
score is plain numpy/OpenCV on the CPU and needs no downloaded weights. The
package imports nothing on its own, so that importing the metrics (as
training validation does) does not load the benchmark builders.
"""
