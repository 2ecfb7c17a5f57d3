"""Oracle tests: each paper's generation procedure run with exact energies for an analytic target
(a 2-D Gaussian mixture, exact.py) must recover the target (DESIGN.md, "Verified against known
answers"; issue 12 item 3). The checks are in checks.py and the same for every procedure."""
