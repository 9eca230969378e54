"""Meta-evolution of PPO objectives (LPO, TA-LPO) with evolution strategies: ``es`` (the
population fitness and the evosax strategy), ``run`` (the host loop), ``evaluate`` (other envs and
horizons), ``plots`` (fitness curves and drift maps)."""
