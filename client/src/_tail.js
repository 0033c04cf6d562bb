    return PolySocket;
}));
