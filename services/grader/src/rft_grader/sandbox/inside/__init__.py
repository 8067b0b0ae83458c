"""Code that runs inside the sandbox (standard library only): the zygote and its grading children."""
