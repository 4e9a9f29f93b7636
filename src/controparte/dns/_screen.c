/* The screen's walk over a datagram's bytes, compiled: `screen(wire, updates)` gives the
 * same verdict as `controparte.dns.screen.python_screen` (the reason, or None) for every
 * input, which tests/unit/test_screen.py checks on every kind of malformed datagram and
 * on generated ones. A flood of malformed datagrams costs the interpreter one call per
 * datagram instead of a loop over its labels and records (docs/HARDENING.md). Built when
 * a C compiler is at hand (setup.py); without it the Python screen serves. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

enum verdict { SHORT, RESPONSE, OPCODE, QDCOUNT, ANSWER, QUESTION, QTYPE, RECORDS, PASS };

static const char *const names[PASS] = {
    "short", "response", "opcode", "qdcount", "answer", "question", "qtype", "records",
};

typedef struct {
    PyObject *reasons[PASS]; /* the labels above, as interned str */
} state;

enum { HEADER = 12, LAST_QTYPE = HEADER + 255 + 4, UPDATE = 5, OPT = 41, TKEY = 249, TSIG = 250 };

static unsigned
u16(const unsigned char *at)
{
    return (unsigned)at[0] << 8 | at[1];
}

/* RECORDS unless the `count` records from `pos` frame the rest of the datagram exactly,
 * with at most one OPT, owned by the root, after the first `before` records, its options
 * filling its RDATA exactly. */
static enum verdict
records(const unsigned char *wire, Py_ssize_t size, Py_ssize_t pos, unsigned before,
        unsigned count)
{
    unsigned opts = 0;
    for (unsigned index = 0; index < count; index++) {
        Py_ssize_t start = pos;
        for (;;) { /* a name: labels, ending with the root or an earlier pointer */
            if (pos >= size)
                return RECORDS;
            unsigned length = wire[pos];
            if (length == 0) {
                pos += 1;
                break;
            }
            if (length >= 0xC0) {
                if (pos + 1 >= size || (Py_ssize_t)((length & 0x3F) << 8 | wire[pos + 1]) >= start)
                    return RECORDS;
                pos += 2;
                break;
            }
            if (length > 63)
                return RECORDS;
            pos += 1 + (Py_ssize_t)length;
        }
        if (pos + 10 > size)
            return RECORDS;
        Py_ssize_t end = pos + 10 + (Py_ssize_t)u16(wire + pos + 8);
        if (!wire[pos] && wire[pos + 1] == OPT) {
            opts += 1;
            if (opts > 1 || index < before || pos != start + 1 || end > size)
                return RECORDS;
            Py_ssize_t option = pos + 10;
            while (option < end) { /* code, length, data: filling the RDATA */
                if (option + 4 > end)
                    return RECORDS;
                option += 4 + (Py_ssize_t)u16(wire + option + 2);
            }
            if (option != end)
                return RECORDS;
        }
        pos = end;
    }
    return pos == size ? PASS : RECORDS;
}

static enum verdict
judge(const unsigned char *wire, Py_ssize_t size, int updates)
{
    if (size < HEADER)
        return SHORT;
    unsigned flags = wire[2];
    if (flags & 0x80)
        return RESPONSE;
    unsigned opcode = flags >> 3 & 0x0F;
    if (opcode && !(updates && opcode == UPDATE))
        return OPCODE;
    if (wire[4] || wire[5] != 1)
        return QDCOUNT;
    if (!opcode && (wire[6] || wire[7]))
        return ANSWER;
    Py_ssize_t pos = HEADER;
    for (;;) { /* the question's name: plain labels only */
        if (pos >= size)
            return QUESTION;
        unsigned length = wire[pos];
        if (length == 0)
            break;
        if (length > 63)
            return QUESTION;
        pos += 1 + (Py_ssize_t)length;
    }
    pos += 5;
    if (pos > size || pos > LAST_QTYPE)
        return QUESTION;
    if (!opcode && !wire[pos - 4]
        && (wire[pos - 3] == OPT || wire[pos - 3] == TKEY || wire[pos - 3] == TSIG))
        return QTYPE;
    unsigned before = u16(wire + 6) + u16(wire + 8); /* answer, authority */
    unsigned count = before + u16(wire + 10);
    if (!count)
        return pos == size ? PASS : RECORDS;
    return records(wire, size, pos, before, count);
}

static PyObject *
screen(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "screen(wire, updates) takes 2 arguments");
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "screen: wire must be bytes");
        return NULL;
    }
    int updates = PyObject_IsTrue(args[1]);
    if (updates < 0)
        return NULL;
    enum verdict found = judge((const unsigned char *)PyBytes_AS_STRING(args[0]),
                               PyBytes_GET_SIZE(args[0]), updates);
    if (found == PASS)
        Py_RETURN_NONE;
    PyObject *reason = ((state *)PyModule_GetState(module))->reasons[found];
    Py_INCREF(reason);
    return reason;
}

static int
exec_module(PyObject *module)
{
    state *st = PyModule_GetState(module);
    for (int i = 0; i < PASS; i++) {
        st->reasons[i] = PyUnicode_InternFromString(names[i]);
        if (st->reasons[i] == NULL)
            return -1;
    }
    return 0;
}

static int
traverse(PyObject *module, visitproc visit, void *arg)
{
    state *st = PyModule_GetState(module);
    for (int i = 0; i < PASS; i++)
        Py_VISIT(st->reasons[i]);
    return 0;
}

static int
clear(PyObject *module)
{
    state *st = PyModule_GetState(module);
    for (int i = 0; i < PASS; i++)
        Py_CLEAR(st->reasons[i]);
    return 0;
}

static void
free_module(void *module)
{
    clear((PyObject *)module);
}

static PyMethodDef methods[] = {
    {"screen", (PyCFunction)(void (*)(void))screen, METH_FASTCALL,
     "screen(wire, updates) -> str | None: the reason `wire` is rejected, or None."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef definition = {
    PyModuleDef_HEAD_INIT,
    .m_name = "controparte.dns._screen",
    .m_doc = "The screen's walk, compiled (see controparte.dns.screen).",
    .m_size = sizeof(state),
    .m_methods = methods,
    .m_slots = slots,
    .m_traverse = traverse,
    .m_clear = clear,
    .m_free = free_module,
};

PyMODINIT_FUNC
PyInit__screen(void)
{
    return PyModuleDef_Init(&definition);
}
