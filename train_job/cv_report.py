"""`python -m train_job.cv_report`: the cross-validation aggregator's command, kept at its
documented path; the aggregator is `train_job.cross_validation.aggregate`."""

from __future__ import annotations

import sys

from train_job.cross_validation.aggregate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
