# The paper's outputs: one long table of every run's metrics, the tables, the figures.


def paper_outputs():
    return run_files("metrics.csv")
