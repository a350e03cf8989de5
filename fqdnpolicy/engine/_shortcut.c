/*
 * The readers' shortcut in C: PolicyEngine.verdict's common case, three lookups.
 *
 * It does what the Python shortcut at the top of PolicyEngine.verdict does, in the same order
 * and on the same published objects: the sender's egress program, the destination's identity,
 * and the verdict the program keeps for every peer in none of its sets. Whatever it cannot
 * answer (a flow with keywords, a source port or an ICMP field, a first sighting, an endpoint
 * destination, a peer in one of the program's sets, a verdict not yet kept, a change in
 * progress) goes to the Python method, unchanged, with the same arguments.
 * So it never decides anything the Python code would not: it only saves the interpreter's
 * dispatch on the path a datapath calls per flow.
 *
 * It runs holding the GIL and calls no Python code of its own; a caller's object with a
 * Python __hash__ could let a writer run midway, so it holds references to what it reads and
 * checks at the end that the snapshot it started from is still published, as the Python code
 * does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

static PyObject *str_egress_attr;   /* "egress" (Snapshot.egress) */
static PyObject *str_prefixes;      /* "prefixes" */
static PyObject *str_outside;       /* "outside" */
static PyObject *str_refs;          /* "refs" */
static PyObject *str_family;        /* "family" */
static PyObject *str_ports;         /* "ports" */
static PyObject *str_egress_value;  /* the direction "egress" */

typedef struct {
    PyObject_HEAD
    PyObject *snapshot;   /* the published Snapshot, kept equal to PolicyEngine._snapshot */
    PyObject *hosts;      /* the published hosts dict (the same object for the engine's life) */
    PyObject *general;    /* the Python verdict, bound: everything else goes there */
    vectorcallfunc vectorcall;
} Shortcut;

/* Whether frozenset ``a`` and ``b`` share no element (iterating the smaller). */
static int
disjoint(PyObject *a, PyObject *b)
{
    if (PySet_GET_SIZE(a) > PySet_GET_SIZE(b)) {
        PyObject *t = a;
        a = b;
        b = t;
    }
    if (PySet_GET_SIZE(a) == 0) {
        return 1;
    }
    PyObject *it = PyObject_GetIter(a);
    if (it == NULL) {
        return -1;
    }
    PyObject *item;
    int result = 1;
    while ((item = PyIter_Next(it)) != NULL) {
        int found = PySet_Contains(b, item);
        Py_DECREF(item);
        if (found != 0) {
            result = found < 0 ? -1 : 0;
            break;
        }
    }
    Py_DECREF(it);
    if (result == 1 && PyErr_Occurred()) {
        return -1;
    }
    return result;
}

/* The kept verdict of the common case, a new reference; NULL (no error set) when there is
 * none to serve. */
static PyObject *
kept(Shortcut *self, PyObject *snapshot, PyObject *src, PyObject *dst, PyObject *protocol,
     PyObject *port)
{
    PyObject *result = NULL, *egress = NULL, *program = NULL, *ident = NULL;
    PyObject *ports = NULL, *refs = NULL, *key = NULL;

    egress = PyObject_GetAttr(snapshot, str_egress_attr);
    if (egress == NULL || !PyDict_Check(egress)) {
        goto done;
    }
    program = PyDict_GetItemWithError(egress, src);
    if (program == NULL || !PyDict_Check(program)) {
        program = NULL;
        goto done;
    }
    Py_INCREF(program);
    ident = PyDict_GetItemWithError(self->hosts, dst);
    if (ident != NULL) {
        Py_INCREF(ident);
    }
    else if (!PyErr_Occurred()) {
        PyObject *prefixes = PyObject_GetAttr(snapshot, str_prefixes);
        if (prefixes == NULL) {
            goto done;
        }
        PyObject *outside = PyObject_GetAttr(prefixes, str_outside);
        Py_DECREF(prefixes);
        if (outside == NULL) {
            goto done;
        }
        if (PyDict_Check(outside)) {
            ident = PyDict_GetItemWithError(outside, dst);
            Py_XINCREF(ident);
        }
        Py_DECREF(outside);
    }
    if (ident == NULL || !PyFrozenSet_Check(ident)) {
        goto done;
    }
    ports = PyObject_GetAttr(ident, str_ports);
    if (ports != Py_None) {
        goto done;  /* an endpoint's address: its receiver's ingress counts too */
    }
    refs = PyObject_GetAttr(program, str_refs);
    if (refs == NULL || !PyAnySet_Check(refs)) {
        goto done;
    }
    int plain = disjoint(ident, refs);
    if (plain < 0) {
        goto done;
    }
    if (!plain) {
        goto done;  /* a peer in one of the program's sets: its view is built in Python */
    }
    PyObject *family = PyObject_GetAttr(ident, str_family);
    if (family == NULL) {
        goto done;
    }
    key = PyTuple_Pack(3, family, protocol, port);
    Py_DECREF(family);
    if (key == NULL) {
        goto done;
    }
    result = PyDict_GetItemWithError(program, key);
    Py_XINCREF(result);
done:
    Py_XDECREF(key);
    Py_XDECREF(refs);
    Py_XDECREF(ports);
    Py_XDECREF(ident);
    Py_XDECREF(program);
    Py_XDECREF(egress);
    /* Any error here (an unhashable endpoint object, say) is the Python method's to raise. */
    PyErr_Clear();
    return result;
}

static PyObject *
shortcut_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Shortcut *self = (Shortcut *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    /* Without a port (fewer than four arguments) no verdict is kept: the Python method. */
    if (kwnames == NULL && nargs >= 4 && nargs <= 8) {
        PyObject *protocol = args[2], *port = args[3];
        int common = 1;
        if (nargs > 4 && args[4] != str_egress_value) {
            common = PyUnicode_CheckExact(args[4])
                     && PyUnicode_Compare(args[4], str_egress_value) == 0;
        }
        for (Py_ssize_t i = 5; i < nargs; i++) {
            common = common && args[i] == Py_None;  /* src_port, icmp_type, icmp_code */
        }
        /* Served only for a plain int port and a protocol that is no bool: True and 443.0
         * hash like 1 and 443 but are refused by the Python method. */
        if (common && PyLong_CheckExact(port) && !PyBool_Check(protocol)) {
            PyObject *snapshot = Py_NewRef(self->snapshot);
            PyObject *found = kept(self, snapshot, args[0], args[1], protocol, port);
            int same = self->snapshot == snapshot;
            Py_DECREF(snapshot);
            if (found != NULL) {
                if (same) {
                    return found;
                }
                Py_DECREF(found);
            }
        }
    }
    return PyObject_Vectorcall(self->general, args, nargsf, kwnames);
}

static PyObject *
shortcut_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *snapshot, *hosts, *general;
    static char *names[] = {"snapshot", "hosts", "general", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO!O:Shortcut", names, &snapshot,
                                     &PyDict_Type, &hosts, &general)) {
        return NULL;
    }
    if (!PyCallable_Check(general)) {
        PyErr_SetString(PyExc_TypeError, "general must be callable");
        return NULL;
    }
    Shortcut *self = (Shortcut *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->snapshot = Py_NewRef(snapshot);
    self->hosts = Py_NewRef(hosts);
    self->general = Py_NewRef(general);
    self->vectorcall = shortcut_vectorcall;
    return (PyObject *)self;
}

static int
shortcut_traverse(Shortcut *self, visitproc visit, void *arg)
{
    Py_VISIT(self->snapshot);
    Py_VISIT(self->hosts);
    Py_VISIT(self->general);
    return 0;
}

static int
shortcut_clear(Shortcut *self)
{
    Py_CLEAR(self->snapshot);
    Py_CLEAR(self->hosts);
    Py_CLEAR(self->general);
    return 0;
}

static void
shortcut_dealloc(Shortcut *self)
{
    PyObject_GC_UnTrack(self);
    shortcut_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
shortcut_publish(Shortcut *self, PyObject *snapshot)
{
    Py_SETREF(self->snapshot, Py_NewRef(snapshot));
    Py_RETURN_NONE;
}

static PyObject *
shortcut_get_doc(Shortcut *self, void *Py_UNUSED(closure))
{
    return PyObject_GetAttrString(self->general, "__doc__");
}

static PyMethodDef shortcut_methods[] = {
    {"publish", (PyCFunction)shortcut_publish, METH_O,
     "Make ``snapshot`` the one readers start from (the writer calls it as it publishes)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef shortcut_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Shortcut, vectorcall), READONLY, NULL},
    {"snapshot", T_OBJECT, offsetof(Shortcut, snapshot), READONLY, "The published snapshot."},
    {"general", T_OBJECT, offsetof(Shortcut, general), READONLY, "The Python verdict."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef shortcut_getset[] = {
    {"__doc__", (getter)shortcut_get_doc, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ShortcutType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fqdnpolicy.engine._shortcut.Shortcut",
    .tp_basicsize = sizeof(Shortcut),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "PolicyEngine.verdict's common case in C; everything else goes to the Python "
              "method.",
    .tp_new = shortcut_new,
    .tp_traverse = (traverseproc)shortcut_traverse,
    .tp_clear = (inquiry)shortcut_clear,
    .tp_dealloc = (destructor)shortcut_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Shortcut, vectorcall),
    .tp_methods = shortcut_methods,
    .tp_members = shortcut_members,
    .tp_getset = shortcut_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "fqdnpolicy.engine._shortcut",
    .m_doc = "The readers' shortcut of PolicyEngine.verdict, in C (optional).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__shortcut(void)
{
    str_egress_attr = PyUnicode_InternFromString("egress");
    str_prefixes = PyUnicode_InternFromString("prefixes");
    str_outside = PyUnicode_InternFromString("outside");
    str_refs = PyUnicode_InternFromString("refs");
    str_family = PyUnicode_InternFromString("family");
    str_ports = PyUnicode_InternFromString("ports");
    str_egress_value = str_egress_attr;
    if (str_egress_attr == NULL || str_prefixes == NULL || str_outside == NULL
        || str_refs == NULL || str_family == NULL || str_ports == NULL) {
        return NULL;
    }
    if (PyType_Ready(&ShortcutType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Shortcut", (PyObject *)&ShortcutType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
