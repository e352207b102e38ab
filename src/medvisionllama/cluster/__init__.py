"""Running the pipeline on a SLURM cluster: job resource estimates (``resources``), the
pipeline's job requests (``jobs``), the cluster's partitions (``slurm``) and the check that every
request can be scheduled before anything is submitted (``preflight``, ``mvl preflight``).
Nothing here imports torch: Snakemake uses it while it plans the DAG."""
