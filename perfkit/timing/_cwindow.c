/* perfkit.timing._cwindow: the compute window of perfkit.timing.window in C.
 *
 * Same behaviour as perfkit.timing.window.ComputeWindow (the reference; the tests run both).
 * A `with phase.compute():` block pays for __enter__ and __exit__ on every step; as Python
 * methods most of their cost is interpreter frames, not the two clock reads they exist for, so
 * this module does the same work without a Python frame (about half the cost per window). Built when a C compiler is present
 * (optional extension); perfkit falls back to the Python class otherwise.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *phase;  /* the owning perfkit.Phase */
    PyObject *mark;   /* () -> mark: the phase timer's mark */
    PyObject *start;  /* mark of the open window's start, or NULL */
    double seconds;   /* host seconds of the windows closed in the current step */
    Py_ssize_t count; /* windows closed in the current step */
    char host;        /* marks are host-clock numbers: seconds add up here */
    char open;        /* a window is open */
    char active;      /* the phase is active: windows may open */
    char in_step;     /* a step of Phase.iterate is running (set by the step loop) */
} ComputeWindow;

static PyObject *str_refuse_compute; /* "_refuse_compute" */
static PyObject *str_add_window;     /* "_add_window" */

static int
window_init(ComputeWindow *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"phase", "mark", "host", NULL};
    PyObject *phase, *mark;
    int host;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOp:ComputeWindow", kwlist, &phase, &mark,
                                     &host)) {
        return -1;
    }
    if (!PyCallable_Check(mark)) {
        PyErr_SetString(PyExc_TypeError, "ComputeWindow(mark=...) must be callable");
        return -1;
    }
    Py_INCREF(phase);
    Py_XSETREF(self->phase, phase);
    Py_INCREF(mark);
    Py_XSETREF(self->mark, mark);
    Py_CLEAR(self->start);
    self->seconds = 0.0;
    self->count = 0;
    self->host = (char)host;
    self->open = 0;
    self->active = 0;
    self->in_step = 0;
    return 0;
}

static int
window_traverse(ComputeWindow *self, visitproc visit, void *arg)
{
    Py_VISIT(self->phase);
    Py_VISIT(self->mark);
    Py_VISIT(self->start);
    return 0;
}

static int
window_clear(ComputeWindow *self)
{
    Py_CLEAR(self->phase);
    Py_CLEAR(self->mark);
    Py_CLEAR(self->start);
    return 0;
}

static void
window_dealloc(ComputeWindow *self)
{
    PyObject_GC_UnTrack(self);
    window_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
window_enter(ComputeWindow *self, PyObject *Py_UNUSED(ignored))
{
    if (self->phase == NULL || self->mark == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ComputeWindow used before __init__");
        return NULL;
    }
    if (self->open || !self->active) {
        /* raises the phase's own error naming it; returns a value only if it did not raise */
        PyObject *res = PyObject_CallMethodNoArgs(self->phase, str_refuse_compute);
        if (res == NULL) {
            return NULL;
        }
        Py_DECREF(res);
    }
    PyObject *start = PyObject_CallNoArgs(self->mark);
    if (start == NULL) {
        return NULL;
    }
    Py_XSETREF(self->start, start);
    self->open = 1;
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *
window_exit(ComputeWindow *self, PyObject *const *Py_UNUSED(args), Py_ssize_t Py_UNUSED(nargs))
{
    if (self->start == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ComputeWindow.__exit__ without __enter__");
        return NULL;
    }
    PyObject *end = PyObject_CallNoArgs(self->mark);
    if (end == NULL) {
        return NULL;
    }
    self->open = 0;
    if (self->in_step) {
        self->count += 1;
        if (self->host) {
            double start_s = PyFloat_AsDouble(self->start);
            double end_s = PyFloat_AsDouble(end);
            Py_DECREF(end);
            if (PyErr_Occurred()) {
                return NULL;
            }
            self->seconds += end_s - start_s;
            Py_RETURN_NONE;
        }
    }
    PyObject *res =
        PyObject_CallMethodObjArgs(self->phase, str_add_window, self->start, end, NULL);
    Py_DECREF(end);
    if (res == NULL) {
        return NULL;
    }
    Py_DECREF(res);
    Py_RETURN_NONE;
}

static PyObject *
window_begin_step(ComputeWindow *self, PyObject *Py_UNUSED(ignored))
{
    self->in_step = 1;
    Py_RETURN_NONE;
}

static PyObject *
window_end_step(ComputeWindow *self, PyObject *Py_UNUSED(ignored))
{
    self->in_step = 0;
    if (self->count == 0) {
        Py_RETURN_NONE;
    }
    double seconds = self->seconds;
    self->seconds = 0.0;
    self->count = 0;
    return PyFloat_FromDouble(seconds);
}

static PyObject *
window_get_in_step(ComputeWindow *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->in_step);
}

static PyObject *
window_get_active(ComputeWindow *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->active);
}

static int
window_set_active(ComputeWindow *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete active");
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    if (truth < 0) {
        return -1;
    }
    self->active = (char)truth;
    return 0;
}

static PyObject *
window_get_open(ComputeWindow *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->open);
}

static PyMethodDef window_methods[] = {
    {"__enter__", (PyCFunction)window_enter, METH_NOARGS,
     "Open the window: record its start mark."},
    {"__exit__", (PyCFunction)(void (*)(void))window_exit, METH_FASTCALL,
     "Close the window: record its end mark and count it (exceptions propagate)."},
    {"begin_step", (PyCFunction)window_begin_step, METH_NOARGS,
     "A step of Phase.iterate starts."},
    {"end_step", (PyCFunction)window_end_step, METH_NOARGS,
     "The step ends: host seconds of the windows closed in it (0.0 on a device), or None "
     "when none closed."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef window_getset[] = {
    {"in_step", (getter)window_get_in_step, NULL, "True while a step of Phase.iterate runs.",
     NULL},
    {"active", (getter)window_get_active, (setter)window_set_active,
     "True while the phase is active (set by the phase).", NULL},
    {"open", (getter)window_get_open, NULL, "True while a window is open.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ComputeWindowType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "perfkit.timing._cwindow.ComputeWindow",
    .tp_doc = PyDoc_STR("ComputeWindow(phase, mark, host): a phase's compute() window."),
    .tp_basicsize = sizeof(ComputeWindow),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)window_init,
    .tp_dealloc = (destructor)window_dealloc,
    .tp_traverse = (traverseproc)window_traverse,
    .tp_clear = (inquiry)window_clear,
    .tp_methods = window_methods,
    .tp_getset = window_getset,
};

static struct PyModuleDef cwindow_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "perfkit.timing._cwindow",
    .m_doc = "perfkit's compute() window in C (see perfkit.timing.window).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__cwindow(void)
{
    str_refuse_compute = PyUnicode_InternFromString("_refuse_compute");
    str_add_window = PyUnicode_InternFromString("_add_window");
    if (str_refuse_compute == NULL || str_add_window == NULL) {
        return NULL;
    }
    if (PyType_Ready(&ComputeWindowType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&cwindow_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&ComputeWindowType);
    if (PyModule_AddObject(module, "ComputeWindow", (PyObject *)&ComputeWindowType) < 0) {
        Py_DECREF(&ComputeWindowType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
