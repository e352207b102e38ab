"""The paper: its published numbers, the tables and figures, and the comparison."""
