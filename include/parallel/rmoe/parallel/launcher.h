// launcher.h — what the process launcher (mpirun, srun) says about this job,
// read from its environment before MPI is initialised.
#pragma once

namespace rmoe {

// Processes of this job on this node: Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE,
// else Slurm's SLURM_NTASKS_PER_NODE (srun), else 1.
int ranks_on_this_node();

}  // namespace rmoe
