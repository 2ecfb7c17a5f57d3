"""The README's *The samplers on an energy of your own*, run verbatim on its exact energy (two Gaussians of std 0.5 at
(+-2, 0), Z = pi): the MALA chains' shares, spread and acceptance, and AIS's estimate of log Z, against the known
answers. (The lines the README quotes are one machine's: a CPU with other vector kernels may round differently, and
500 steps carry that into the printed digits, so they are not compared.)

Tolerances, set from the sampling error before the run: the right-hand share of 4000 symmetric starts has a
standard error of 0.008 (0.05 is 6 of them); the standard deviation of y over 4000 draws of N(0, 0.5²) one of 0.0056
(0.03 is 5); AIS with 4000 chains and 200 stages on this 2-D target: 0.05 in log Z; the controller's acceptance
averages 0.574 at equilibrium (0.03).
"""
from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    (code,) = re.findall(r"<!-- sampler-example: sample_any.py -->\s*```python\n(.*?)```", README.read_text(),
                         flags=re.DOTALL)
    return code


def test_the_readme_sampler_example_gets_the_known_answers():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_example(), "README.md:sample_any.py", "exec"), {"__name__": "readme_example"})
    mala_line, ais_line = out.getvalue().splitlines()
    share, std_y, acceptance = map(float, re.findall(r"\d+\.\d+", mala_line))
    log_z, exact = map(float, re.findall(r"-?\d+\.\d+", ais_line))
    assert abs(share - 0.5) < 0.05 and abs(std_y - 0.5) < 0.03 and abs(acceptance - 0.574) < 0.03
    assert exact == round(math.log(math.pi), 3) and abs(log_z - math.log(math.pi)) < 0.05
